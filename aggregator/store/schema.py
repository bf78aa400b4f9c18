"""Every table of the product in one metadata: what the migrations manage.

Each package keeps its own tables next to its code (the ledger here, settlement
runs in aggregator/settlement/store.py, sites in aggregator/sites/store.py,
programme enrolments in aggregator/programmes/enrollment.py, the VEN's event store in ven/store.py);
this module only gathers them.
"""
from sqlmodel import SQLModel

import aggregator.programmes.enrollment  # noqa: F401  (programme_enrollment)
import aggregator.settlement.store  # noqa: F401  (registers settlement_run)
import aggregator.sites.store  # noqa: F401  (site)
import aggregator.store.models  # noqa: F401  (vehicles, sessions, events, setpoints, meter readings)
import ven.store  # noqa: F401  (ven_event, ven_event_interval, ven_identity)

metadata = SQLModel.metadata
