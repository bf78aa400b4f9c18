"""A real Prometheus server for tests (``/usr/bin/prometheus``, Debian 2.42).

    with PrometheusServer(["127.0.0.1:9464"]) as prom:
        prom.wait_for('up{job="v2x-aggregator"}', lambda r: r and r[0]["value"][1] == "1")
        prom.query("v2x_fleet_export_watts")

It writes a temporary config scraping the given ``host:port`` targets every
second (job ``v2x-aggregator`` unless told otherwise), optionally with rule
files, starts Prometheus on a free 127.0.0.1 port with its own temporary TSDB,
waits for ``/-/ready``, answers PromQL over the HTTP API (urllib), and stops
the process it started by pid. Use ``require_binary`` to skip (or, under
``CI=true``, fail) when the binary is missing.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

PROMETHEUS_BINARY = "/usr/bin/prometheus"


def require_binary(path_or_name: str) -> str:
    """Return the binary's path; if missing, skip the test — or fail it when
    the environment says ``CI=true`` (CI must not silently skip)."""
    import pytest

    found = path_or_name if os.path.isabs(path_or_name) and os.access(path_or_name, os.X_OK) \
        else shutil.which(path_or_name)
    if found:
        return found
    message = f"{path_or_name} is not installed (Debian package 'prometheus')"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " and CI=true")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    def __init__(self, targets: Sequence[str], *, job: str = "v2x-aggregator",
                 scrape_interval: str = "1s", rule_files: Sequence[str | Path] = (),
                 binary: str = PROMETHEUS_BINARY, startup_timeout: float = 30.0):
        self.targets = list(targets)
        self.job = job
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("not started")
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        assert self.workdir is not None
        lines = ["global:",
                 f"  scrape_interval: {self.scrape_interval}",
                 f"  evaluation_interval: {self.scrape_interval}"]
        if self.rule_files:
            lines.append("rule_files:")
            lines += [f"  - {json.dumps(str(p))}" for p in self.rule_files]
        lines += ["scrape_configs:",
                  f"  - job_name: {json.dumps(self.job)}",
                  f"    scrape_interval: {self.scrape_interval}",
                  f"    scrape_timeout: {self.scrape_interval}",
                  "    static_configs:",
                  f"      - targets: {json.dumps(self.targets)}"]
        path = self.workdir / "prometheus.yml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> "PrometheusServer":
        if self.process is not None:
            raise PrometheusError("already started")
        self.workdir = Path(tempfile.mkdtemp(prefix="v2x-prometheus-"))
        config = self._write_config()
        for attempt in range(3):          # a free port can be taken between probe and bind
            self.port = free_port()
            log = open(self.workdir / "prometheus.log", "wb")
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{self.port}",
                 f"--storage.tsdb.path={self.workdir / 'data'}", "--storage.tsdb.retention.time=1h",
                 "--web.enable-lifecycle"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            if self._wait_ready():
                return self
            self._terminate()
            if "address already in use" not in self.log_tail():
                break
        tail = self.log_tail()
        self.stop()
        raise PrometheusError(f"prometheus did not become ready:\n{tail}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        return False

    def log_tail(self, lines: int = 30) -> str:
        if self.workdir is None or not (self.workdir / "prometheus.log").exists():
            return ""
        return "\n".join((self.workdir / "prometheus.log").read_text(errors="replace").splitlines()[-lines:])

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def stop(self) -> None:
        self._terminate()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "PrometheusServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- HTTP API

    def api(self, path: str, **params) -> dict | list:
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read() or b"{}")
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        """Instant query. Vectors come back as the API's list of
        ``{"metric": {...}, "value": [ts, "v"]}``; a scalar or string as a
        one-element list ``[{"metric": {}, "value": [ts, "v"]}]``."""
        data = self.api("query", query=promql)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def wait_for(self, promql: str, predicate: Callable[[list[dict]], bool] = bool,
                 timeout: float = 20.0, interval: float = 0.25) -> list[dict]:
        """Poll ``query(promql)`` until ``predicate(result)``; return that result.
        Raises ``TimeoutError`` with the last result on timeout."""
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{promql!r} did not satisfy the predicate in {timeout}s; last: {result}")
            time.sleep(interval)

    def rules(self) -> list[dict]:
        """Loaded rules (alerting and recording) as the API lists them."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def targets_health(self) -> dict[str, str]:
        return {t["scrapeUrl"]: t["health"] for t in self.api("targets")["activeTargets"]}
