"""The test helper's own contract: missing binaries skip locally, fail in CI."""
import pytest

from tests.integration.prometheus_server import PrometheusError, PrometheusServer, require_binary


def test_missing_binary_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_binary("/nonexistent/prometheus")


def test_missing_binary_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_binary("/nonexistent/prometheus")


def test_a_server_that_cannot_start_is_reported(tmp_path):
    broken = tmp_path / "prometheus"
    broken.write_text("#!/bin/sh\necho 'boom: bad flag' >&2\nexit 3\n")
    broken.chmod(0o755)
    server = PrometheusServer(["127.0.0.1:1"], binary=str(broken), startup_timeout=5)
    with pytest.raises(PrometheusError, match="boom: bad flag"):
        server.start()
    assert server.process is None and server.workdir is None
