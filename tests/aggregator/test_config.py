"""Configuration: the documented defaults load; unknown keys and bad values stop start-up."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from aggregator.config import ConfigError, Settings, default_config_text, load_settings


def test_documented_default_file_equals_built_in_defaults(tmp_path):
    path = tmp_path / "v2x.toml"
    path.write_text(default_config_text())
    assert load_settings(path, environ={}) == Settings()
    assert tomllib.loads(default_config_text())  # valid TOML


def test_environment_overrides_file(tmp_path):
    path = tmp_path / "v2x.toml"
    path.write_text('[ven]\nven_name = "from-file"\n[metrics]\nport = 9000\n')
    settings = load_settings(path, environ={"V2X_VEN_NAME": "from-env", "V2X_DATABASE_URL": "postgresql://x@/db"})
    assert settings.ven.ven_name == "from-env"
    assert settings.metrics.port == 9000
    assert settings.database.url == "postgresql://x@/db"


@pytest.mark.parametrize("text, named", [
    ('[ven]\nvtn_ur = "http://x"\n', "ven.vtn_ur"),
    ('[bogus]\nx = 1\n', "bogus"),
    ('[metrics]\nport = 70000\n', "metrics.port"),
    ('[program]\nexport_sign = "sideways"\n', "program.export_sign"),
    ('[program]\nsimple_level_export_kw = { "4" = 10.0 }\n', "program.simple_level_export_kw"),
    ('[ven]\nvtn_url = "ftp://x"\n', "ven.vtn_url"),
    ('[program]\ntimezone = "Mars/Olympus"\n', "program.timezone"),
    # [[sites]]: limits >= 0 and finite, a real time zone, no unknown keys, unique ids
    ('[[sites]]\nid = 1\nname = "a"\nexport_limit_kw = -1.0\n', "sites.0.export_limit_kw"),
    ('[[sites]]\nid = 1\nname = "a"\nimport_limit_kw = inf\n', "sites.0.import_limit_kw"),
    ('[[sites]]\nid = 1\nname = "a"\nimport_limit_kw = nan\n', "sites.0.import_limit_kw"),
    ('[[sites]]\nid = 1\nname = "a"\ntimezone = "Mars/Olympus"\n', "sites.0.timezone"),
    ('[[sites]]\nid = 1\nname = "a"\ncolour = "red"\n', "sites.0.colour"),
    ('[[sites]]\nname = "a"\n', "sites.0.id"),
    ('[[sites]]\nid = -2\nname = "a"\n', "sites.0.id"),
    ('[[sites]]\nid = 1\nname = "a"\n[[sites]]\nid = 1\nname = "b"\n', "sites"),
])
def test_bad_keys_and_values_are_named(tmp_path, text, named):
    path = tmp_path / "v2x.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert named in str(err.value)


def test_bad_environment_value_is_named():
    with pytest.raises(ConfigError, match="metrics.port"):
        load_settings(environ={"V2X_METRICS_PORT": "lots"})


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[ven\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_cli_exits_non_zero_with_the_key_named(tmp_path):
    path = tmp_path / "v2x.toml"
    path.write_text('[fleet]\nscenaro = "x"\n')
    run = subprocess.run([sys.executable, "-m", "aggregator.cli", "--config", str(path), "config"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "fleet.scenaro" in run.stderr


def test_tls_settings_must_come_together_and_exist(tmp_path):
    with pytest.raises(ConfigError, match="missing"):
        load_settings(environ={"V2X_VTN_URL": "https://vtn.example/OpenADR2/Simple/2.0b",
                               "V2X_VEN_CERT": str(tmp_path / "ven.crt")})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"V2X_VTN_URL": "https://vtn.example/OpenADR2/Simple/2.0b",
                               "V2X_VEN_CERT": str(tmp_path / "ven.crt"), "V2X_VEN_KEY": str(tmp_path / "k"),
                               "V2X_VTN_CA": str(tmp_path / "ca"), "V2X_VTN_FINGERPRINT": "AB:CD"})


def test_tls_settings_reach_the_openadr_client(tmp_path):
    from aggregator.app import Aggregator
    from ven.pki import create_dev_pki
    pki = create_dev_pki(tmp_path / "pki")
    settings = load_settings(environ={
        "V2X_VTN_URL": "https://127.0.0.1:1/OpenADR2/Simple/2.0b", "V2X_VEN_CERT": str(pki.ven_cert),
        "V2X_VEN_KEY": str(pki.ven_key), "V2X_VTN_CA": str(pki.ca_cert), "V2X_VTN_FINGERPRINT": pki.vtn_fingerprint,
        "V2X_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"})
    assert settings.ven.secure
    app = Aggregator(settings)
    try:
        client = app.ven.client
        assert client.cert_path == str(pki.ven_cert) and client.ca_file == str(pki.ca_cert)
        assert client.vtn_fingerprint == pki.vtn_fingerprint
    finally:
        app.engine.dispose()


def test_target_and_program_settings_reach_the_ven_rules(tmp_path):
    from aggregator.app import Aggregator
    path = tmp_path / "v2x.toml"
    path.write_text('[ven]\nresource_ids = ["depot-7"]\ngroup_ids = ["north"]\n'
                    '[program]\nadditional_market_contexts = ["http://utility.example/programs/cs"]\n'
                    'price_export_kw = [[0.4, 50.0]]\n'
                    f'[database]\nurl = "sqlite:///{tmp_path / "db.sqlite"}"\n')
    app = Aggregator(load_settings(path, environ={}))
    try:
        identity = app.ven.engine.identity
        assert identity.resource_ids == {"depot-7"} and identity.group_ids == {"north"}
        assert identity.market_contexts == {"http://utility.example/programs/v2x-summer",
                                            "http://utility.example/programs/cs"}
        assert app.intake.signals.price_export_kw == ((0.4, 50.0),)
    finally:
        app.engine.dispose()
