import pytest

from tests.api.live import LiveAggregator


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One aggregator with history for a module's read-mostly tests (SQLite)."""
    running = LiveAggregator(f"sqlite:///{tmp_path_factory.mktemp('api') / 'api.db'}").start()
    try:
        yield running.with_history()
    finally:
        running.stop()
