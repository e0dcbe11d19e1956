"""Settings sources and precedence; the login throttle's arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from onvif_nvr.auth.throttle import LoginThrottle
from onvif_nvr.clock import ManualClock
from onvif_nvr.config import ConfigError, load_settings


def test_defaults():
    s = load_settings(environ={})
    assert (s.http_port, s.rtsp_port, s.bind) == (8080, 8554, "0.0.0.0")
    assert s.effective_database_url.endswith("/data/nvr.sqlite3")
    assert s.host.apply_network_settings is False


def test_precedence_file_env_overrides(tmp_path: Path):
    cfg = tmp_path / "nvr.toml"
    cfg.write_text(
        'http_port = 9000\nrtsp_port = 9554\n[security]\nnonce_lifetime_s = 60\n[device]\nname = "From file"\n'
    )
    env = {
        "ONVIF_NVR_RTSP_PORT": "10554",
        "ONVIF_NVR_SECURITY_DIGEST_ALGORITHMS": "SHA-256",
        "ONVIF_NVR_HOST_APPLY_NETWORK_SETTINGS": "true",
        "OTHER": "x",
    }
    s = load_settings(cfg, environ=env, overrides={"http_port": 7000, "bind": None})
    assert s.http_port == 7000  # option wins
    assert s.rtsp_port == 10554  # environment beats file
    assert s.security.nonce_lifetime_s == 60  # file
    assert s.security.digest_algorithms == ("SHA-256",)
    assert s.device.name == "From file"
    assert s.host.apply_network_settings is True
    assert s.bind == "0.0.0.0"  # None override = not given


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("nope = 1\n", {}, "unknown setting nope"),
        ("[security]\nrealm = 5\n", {}, "security.realm: expected a string, got 5"),
        ("", {"ONVIF_NVR_HTTP_PORT": "eighty"}, "http_port: expected an integer, got 'eighty'"),
        (
            "",
            {"ONVIF_NVR_HOST_APPLY_NETWORK_SETTINGS": "perhaps"},
            "host.apply_network_settings: expected a boolean, got 'perhaps'",
        ),
        (
            "http_port = 70000\n",
            {},
            "http_port and rtsp_port must be between 0 (any free port) and 65535",
        ),
        ("device = 3\n", {}, "device: expected a table"),
        ('[storage]\nfsync = "sometimes"\n', {}, 'storage.fsync must be "fragment"'),
        ("[storage]\nfsync_interval_s = 0\n", {}, "storage.fsync_interval_s must be"),
        ("[storage]\ncheck_interval_s = 0\n", {}, "storage.check_interval_s must be"),
        ("[x\n", {}, "is not valid TOML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, content: str, env: dict, message: str):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env)
    assert message in str(info.value)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_example_config_documents_every_key():
    import dataclasses
    import tomllib

    from onvif_nvr.config import Settings

    example = Path(__file__).resolve().parent.parent / "onvif_nvr" / "example.toml"
    values = tomllib.loads(example.read_text())
    assert load_settings(example, environ={}) == Settings(admin_password="")
    text = example.read_text()
    for field in dataclasses.fields(Settings):
        if field.name == "camera":  # an array of tables: documented as a commented example
            assert "# [[camera]]" in text
            continue
        assert field.name in values, field.name
        if dataclasses.is_dataclass(field.default):
            for sub in dataclasses.fields(field.default):
                assert sub.name in values[field.name], f"{field.name}.{sub.name}"


def test_throttle_locks_out_and_doubles():
    clock = ManualClock()
    t = LoginThrottle(clock, max_failures=3, window_s=60, lockout_s=10, lockout_max_s=25)
    for _ in range(2):
        t.failure("10.0.0.1")
    assert t.retry_after_s("10.0.0.1") == 0
    t.failure("10.0.0.1")
    assert t.retry_after_s("10.0.0.1") == 10
    assert t.retry_after_s("10.0.0.2") == 0
    clock.advance(10)
    assert t.retry_after_s("10.0.0.1") == 0
    for _ in range(3):
        t.failure("10.0.0.1")
    assert t.retry_after_s("10.0.0.1") == 20
    clock.advance(20)
    for _ in range(3):
        t.failure("10.0.0.1")
    assert t.retry_after_s("10.0.0.1") == 25  # capped
    t.success("10.0.0.1")
    assert t.retry_after_s("10.0.0.1") == 0


def test_throttle_window_forgets_old_failures():
    clock = ManualClock()
    t = LoginThrottle(clock, max_failures=2, window_s=5, lockout_s=10)
    t.failure("a")
    clock.advance(6)
    t.failure("a")
    assert t.retry_after_s("a") == 0
