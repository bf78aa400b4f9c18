"""The API served by the aggregator's own process ([api] settings), and `v2x tokens`."""
from __future__ import annotations

import aiohttp

from aggregator.app import Aggregator
from aggregator.cli import main
from aggregator.config import Settings, load_settings


async def test_the_aggregator_serves_the_api_and_readyz_waits_for_the_ven(tmp_path):
    settings = Settings.model_validate({"database": {"url": f"sqlite:///{tmp_path / 'a.db'}"},
                                       "metrics": {"port": 0}, "api": {"port": 0}})
    app = Aggregator(settings)
    try:
        port = await app.serve_api(require_ven=True)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                assert answer.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as answer:
                body = await answer.json()
                assert answer.status == 503 and body["database"] and body["ven_registered"] is False
            async with http.get(f"http://127.0.0.1:{port}/console/driver.html") as answer:
                assert answer.status == 200 and "My vehicle" in await answer.text()
    finally:
        await app.stop()


def test_api_settings_from_the_environment():
    settings = load_settings(None, {"V2X_API_HOST": "0.0.0.0", "V2X_API_PORT": "9999"})
    assert (settings.api.host, settings.api.port, settings.api.enabled) == ("0.0.0.0", 9999, True)


def test_tokens_cli(tmp_path, capsys):
    database = f"sqlite:///{tmp_path / 't.db'}"
    assert main(["--database", database, "tokens", "create", "--role", "utility", "--label", "programme"]) == 0
    token = capsys.readouterr().out.splitlines()[1]
    assert token.startswith("v2x_")
    assert main(["--database", database, "tokens", "create", "--role", "driver"]) == 2
    assert "--vehicle" in capsys.readouterr().err
    assert main(["--database", database, "tokens", "list"]) == 0
    listed = capsys.readouterr().out
    assert "utility" in listed and token not in listed
    assert main(["--database", database, "tokens", "revoke", "1"]) == 0
    assert main(["--database", database, "tokens", "revoke", "1"]) == 1
