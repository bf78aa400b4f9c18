"""Site limits for the allocator: the site records' import and export limits as `Targets`
arrays indexed by the fleet's `site` column.

The dispatcher plans every few seconds; the limits change when an operator edits a site. So
they are cached: re-read when this process writes a site (`changed`, called by the API) and at
least every `refresh` of the dispatcher's clock (edits made elsewhere: `v2x`, another instance)."""
from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from aggregator.sites.store import list_sites

log = logging.getLogger(__name__)
RETRY_AFTER_FAILURE = timedelta(seconds=5)


def site_limit_arrays(limits: dict[int, tuple[float | None, float | None]], site: np.ndarray | None
                      ) -> dict[str, np.ndarray]:
    """`Targets` keyword arguments for a fleet whose EVs are at `site` (their site numbers):
    (S,) import and export limits with S = the highest site number + 1, inf where a site has no
    record or no limit (the allocator leaves out an EV whose site is beyond S, so S covers all).
    Empty when no EV's site is limited: the allocator then plans exactly as without sites."""
    if site is None or len(site) == 0 or not limits:
        return {}
    n_sites = int(np.max(site)) + 1
    imp = np.full(n_sites, np.inf)
    exp = np.full(n_sites, np.inf)
    for number, (import_kw, export_kw) in limits.items():
        if 0 <= number < n_sites:
            imp[number] = np.inf if import_kw is None else import_kw
            exp[number] = np.inf if export_kw is None else export_kw
    used = np.zeros(n_sites, dtype=bool)
    used[np.asarray(site, dtype=np.int64)] = True       # O(N), no sort: this runs at every plan
    if np.isinf(imp[used]).all() and np.isinf(exp[used]).all():
        return {}
    return {"site_import_limit_kw": imp, "site_export_limit_kw": exp}


class SiteLimits:
    """The cached limits of every site record: {site number: (import kW, export kW)}, None = none."""

    def __init__(self, engine, refresh: timedelta = timedelta(seconds=60)):
        self.engine = engine
        self.refresh = refresh
        self.version = 0                  # bumps when a site is written through this process
        self._limits: dict[int, tuple[float | None, float | None]] = {}
        self._due: datetime | None = None  # when to read again (None: at the next use)

    def changed(self) -> None:
        """A site was written: read the records again before the next plan."""
        self.version += 1
        self._due = None

    def current(self, now: datetime) -> dict[int, tuple[float | None, float | None]]:
        if self._due is None or now >= self._due or now + self.refresh < self._due:
            try:
                self._limits = {row.id: (_limit(row.import_limit_kw), _limit(row.export_limit_kw))
                                for row in list_sites(self.engine)}
                self._due = now + self.refresh
            except SQLAlchemyError as err:   # keep planning with the last limits read
                log.error("site limits not read (%s); planning with the last known ones", err.__class__.__name__)
                self._due = now + RETRY_AFTER_FAILURE
        return self._limits

    def for_fleet(self, site: np.ndarray | None, now: datetime) -> dict[str, np.ndarray]:
        """`Targets` keyword arguments for the fleet's site column (see `site_limit_arrays`)."""
        return site_limit_arrays(self.current(now), site)


def _limit(value: float | None) -> float | None:
    """A stored limit the allocator can take: None (no limit) unless finite and >= 0."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)
