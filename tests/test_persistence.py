"""Settings and users survive a process restart and a SystemReboot; factory defaults reset
what they should and keep what they should."""

from __future__ import annotations

import sqlite3
import time

import pytest
import zeep.exceptions

from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD


def configure(url: str) -> None:
    _, admin = device_client(url, "admin", ADMIN_PASSWORD)
    admin.CreateUsers([{"Username": "keeper", "Password": "keeper-pw", "UserLevel": "Operator"}])
    admin.SetScopes(["onvif://www.onvif.org/name/Persisted", "onvif://www.onvif.org/location/dock"])
    admin.SetDiscoveryMode("NonDiscoverable")
    admin.SetHostname("persisted-host")
    admin.SetNTP(FromDHCP=False, NTPManual=[{"Type": "IPv4", "IPv4Address": "192.0.2.5"}])
    admin.SetSystemDateAndTime(
        DateTimeType="NTP", DaylightSavings=False, TimeZone={"TZ": "EST5EDT,M3.2.0,M11.1.0"}
    )
    admin.SetDNS(FromDHCP=False, DNSManual=[{"Type": "IPv4", "IPv4Address": "192.0.2.53"}])


def snapshot(url: str) -> dict:
    _, admin = device_client(url, "admin", ADMIN_PASSWORD)
    _, keeper = device_client(url, "keeper", "keeper-pw", digest=True)
    return {
        "users": sorted((u.Username, u.UserLevel) for u in admin.GetUsers()),
        "scopes": [s.ScopeItem for s in admin.GetScopes() if s.ScopeDef == "Configurable"],
        "mode": admin.GetDiscoveryMode(),
        "hostname": admin.GetHostname().Name,
        "ntp": [h.IPv4Address for h in admin.GetNTP().NTPManual],
        "tz": admin.GetSystemDateAndTime().TimeZone.TZ,
        "dns": [d.IPv4Address for d in admin.GetDNS().DNSManual],
        "guid": admin.GetEndpointReference().GUID,
        "serial": admin.GetDeviceInformation().SerialNumber,
        "keeper_can_log_in": bool(keeper.GetDeviceInformation().Model),
    }


def test_everything_survives_a_process_restart(fresh_nvr):
    configure(fresh_nvr.device_url)
    before = snapshot(fresh_nvr.device_url)
    fresh_nvr.restart()
    assert snapshot(fresh_nvr.device_url) == before
    assert before["scopes"] == [
        "onvif://www.onvif.org/name/Persisted",
        "onvif://www.onvif.org/location/dock",
    ]
    assert before["tz"] == "EST5EDT,M3.2.0,M11.1.0"


def test_everything_survives_system_reboot(fresh_nvr):
    configure(fresh_nvr.device_url)
    before = snapshot(fresh_nvr.device_url)
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    admin.SystemReboot()
    fresh_nvr.wait_serving(count=2)
    assert snapshot(fresh_nvr.device_url) == before


def test_the_database_is_sqlite_in_wal_mode_and_holds_no_clear_password(fresh_nvr):
    configure(fresh_nvr.device_url)
    db = fresh_nvr.data_dir / "nvr.sqlite3"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = conn.execute("SELECT username, password_enc FROM users").fetchall()
    assert {r[0] for r in rows} == {"admin", "keeper"}
    assert all(r[1].startswith("v1:") and "keeper-pw" not in r[1] for r in rows)
    assert (fresh_nvr.data_dir / "secret.key").stat().st_mode & 0o777 == 0o600


def test_admin_password_option_only_applies_to_an_empty_data_dir(fresh_nvr):
    fresh_nvr.admin_password = "a-different-one"
    fresh_nvr.restart()
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    assert admin.GetDeviceInformation().Model


def wait_for_reboot(nvr, count: int) -> None:
    nvr.wait_serving(count=count)
    time.sleep(0.1)


def test_soft_factory_default_keeps_network_and_users(fresh_nvr):
    configure(fresh_nvr.device_url)
    before = snapshot(fresh_nvr.device_url)
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    admin.SetSystemFactoryDefault("Soft")
    wait_for_reboot(fresh_nvr, 2)
    after = snapshot(fresh_nvr.device_url)
    # Kept: users, network (hostname, DNS, NTP), identity.
    for key in ("users", "hostname", "dns", "ntp", "guid", "serial", "keeper_can_log_in"):
        assert after[key] == before[key], key
    # Reset: scopes, discovery mode, time zone.
    assert after["scopes"] == ["onvif://www.onvif.org/location/unknown"]
    assert after["mode"] == "Discoverable"


def test_hard_factory_default_wipes_configuration(fresh_nvr):
    configure(fresh_nvr.device_url)
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    guid = admin.GetEndpointReference().GUID
    admin.SetSystemFactoryDefault("Hard")
    wait_for_reboot(fresh_nvr, 2)
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    assert [u.Username for u in admin.GetUsers()] == ["admin"]
    assert admin.GetDiscoveryMode() == "Discoverable"
    assert admin.GetHostname().Name != "persisted-host"
    assert guid == admin.GetEndpointReference().GUID  # the device identity is hardware-like
    _, keeper = device_client(fresh_nvr.device_url, "keeper", "keeper-pw")
    with pytest.raises(zeep.exceptions.Fault):
        keeper.GetDeviceInformation()


def test_head_revision_constant_matches_the_migrations():
    from importlib import resources

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from onvif_nvr.db.engine import HEAD_REVISION

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("onvif_nvr.db") / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


def _schema(url: str) -> dict:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        return {
            table: sorted(
                (c["name"], str(c["type"]), c["nullable"], c.get("primary_key", 0))
                for c in inspector.get_columns(table)
            )
            for table in sorted(inspector.get_table_names())
        }
    finally:
        engine.dispose()


def test_fresh_schema_equals_running_every_migration(tmp_path):
    """Start-up creates an empty database from the models and stamps it at the head
    revision; that must be the same schema the migrations build step by step."""
    from importlib import resources

    import alembic.command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from onvif_nvr.db.engine import HEAD_REVISION, current_revision, migrate

    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    engine = create_engine(fresh)
    migrate(engine)
    assert current_revision(engine) == HEAD_REVISION
    engine.dispose()

    stepped = f"sqlite:///{tmp_path / 'stepped.sqlite3'}"
    engine = create_engine(stepped)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("onvif_nvr.db") / "migrations"))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        alembic.command.upgrade(cfg, "head")
    engine.dispose()
    assert _schema(fresh) == _schema(stepped)


def test_an_older_database_is_upgraded_by_alembic(tmp_path):
    from importlib import resources

    import alembic.command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from onvif_nvr.db.engine import HEAD_REVISION, current_revision, migrate

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("onvif_nvr.db") / "migrations"))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        alembic.command.upgrade(cfg, "0001")
    assert current_revision(engine) == "0001"
    migrate(engine)
    assert current_revision(engine) == HEAD_REVISION
    assert "discovered_devices" in _schema(url)
    engine.dispose()
