"""Sites: where stations stand (the `site` number of stations and vehicles), with the limits the
grid connection puts on them (transformer or contract import, interconnection export).

store.py keeps the site records (seeded from `[[sites]]` in the configuration, edited through the
API); limits.py turns them into the allocator's per-site limits for the dispatcher."""
from aggregator.sites.limits import SiteLimits, site_limit_arrays
from aggregator.sites.store import SiteRecord, delete_site, get_site, list_sites, seed_sites

__all__ = ["SiteLimits", "SiteRecord", "delete_site", "get_site", "list_sites", "seed_sites", "site_limit_arrays"]
