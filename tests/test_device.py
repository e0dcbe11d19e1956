"""The Device service as zeep (WS-UsernameToken and HTTP Digest) sees it over loopback."""

from __future__ import annotations

import datetime
import time

import pytest
import requests
import zeep.exceptions
from lxml import etree
from zeep.helpers import serialize_object

from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD


def fault_subcodes(info: pytest.ExceptionInfo) -> list[str]:
    return [q.localname for q in (info.value.subcodes or [])]


def test_device_information_is_identical_over_both_logins(admin, admin_digest):
    a = admin.GetDeviceInformation()
    b = admin_digest.GetDeviceInformation()
    assert serialize_object(a) == serialize_object(b)
    assert a.Manufacturer == "onvif-nvr project"
    assert a.Model == "onvif-nvr"
    assert len(a.SerialNumber) == 12


def test_get_services_xaddrs_follow_the_host_the_client_used(nvr):
    _, by_ip = device_client(nvr.device_url)
    _, by_name = device_client(f"http://localhost:{nvr.port}/onvif/device_service")
    assert by_ip.GetServices(False)[0].XAddr == nvr.device_url
    assert (
        by_name.GetServices(False)[0].XAddr == f"http://localhost:{nvr.port}/onvif/device_service"
    )
    caps = by_name.GetCapabilities(["All"])
    assert caps.Device.XAddr == f"http://localhost:{nvr.port}/onvif/device_service"


def test_get_services_with_capabilities_matches_get_service_capabilities(anonymous):
    services = anonymous.GetServices(True)
    device = next(s for s in services if s.Namespace == "http://www.onvif.org/ver10/device/wsdl")
    assert (device.Version.Major, device.Version.Minor) == (26, 6)
    embedded = device.Capabilities._value_1
    caps = anonymous.GetServiceCapabilities()
    assert embedded.Security.HttpDigest is True and caps.Security.HttpDigest is True
    assert embedded.Security.UsernameToken is True and caps.Security.UsernameToken is True
    assert embedded.Security.MaxUsers == caps.Security.MaxUsers
    assert embedded.System.SystemLogging == caps.System.SystemLogging


def test_get_capabilities_categories(anonymous):
    caps = anonymous.GetCapabilities(["Device"])
    assert caps.Device.Security is not None
    with pytest.raises(zeep.exceptions.Fault) as info:
        anonymous.GetCapabilities(["PTZ"])
    assert fault_subcodes(info) == ["ActionNotSupported", "NoSuchService"]


def test_pre_auth_operations_need_no_login(anonymous):
    assert anonymous.GetSystemDateAndTime().UTCDateTime.Date.Year >= 2024
    assert anonymous.GetHostname().Name
    assert anonymous.GetEndpointReference().GUID.startswith("urn:uuid:")
    assert anonymous.GetWsdlUrl().endswith("/onvif/wsdl/")
    with pytest.raises(zeep.exceptions.Fault):
        anonymous.GetDeviceInformation()


def test_system_date_and_time_is_utc(anonymous):
    answer = anonymous.GetSystemDateAndTime()
    utc = answer.UTCDateTime
    reported = datetime.datetime(
        utc.Date.Year,
        utc.Date.Month,
        utc.Date.Day,
        utc.Time.Hour,
        utc.Time.Minute,
        utc.Time.Second,
        tzinfo=datetime.UTC,
    )
    assert abs((reported - datetime.datetime.now(datetime.UTC)).total_seconds()) < 5
    assert answer.TimeZone.TZ


def test_wsdl_is_served(nvr, anonymous):
    r = requests.get(nvr.device_url + "?wsdl", timeout=10)
    assert r.status_code == 200
    root = etree.fromstring(r.content)
    assert root.tag == "{http://schemas.xmlsoap.org/wsdl/}definitions"
    # Relative schema imports resolve against the served copy.
    onvif_xsd = requests.get(nvr.base + "/onvif/wsdl/ver10/schema/onvif.xsd", timeout=10)
    assert onvif_xsd.status_code == 200
    assert requests.get(nvr.base + "/onvif/wsdl/../../etc/passwd", timeout=10).status_code == 404
    listing = requests.get(anonymous.GetWsdlUrl(), timeout=10)
    assert "devicemgmt.wsdl" in listing.text


def test_time_zone_and_manual_time_settings(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    admin.SetSystemDateAndTime(
        DateTimeType="Manual", DaylightSavings=True, TimeZone={"TZ": "CET-1CEST,M3.5.0,M10.5.0/3"}
    )
    answer = admin.GetSystemDateAndTime()
    assert answer.DateTimeType == "Manual"
    assert answer.TimeZone.TZ == "CET-1CEST,M3.5.0,M10.5.0/3"
    utc, local = answer.UTCDateTime, answer.LocalDateTime
    diff_h = (local.Time.Hour - utc.Time.Hour) % 24
    assert diff_h in (1, 2)
    assert answer.DaylightSavings is (diff_h == 2)
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetSystemDateAndTime(
            DateTimeType="Manual", DaylightSavings=False, TimeZone={"TZ": "not a zone!!"}
        )
    assert fault_subcodes(info) == ["InvalidArgVal", "InvalidTimeZone"]
    bad_date = {
        "Time": {"Hour": 25, "Minute": 0, "Second": 0},
        "Date": {"Year": 2026, "Month": 2, "Day": 30},
    }
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetSystemDateAndTime(
            DateTimeType="Manual", DaylightSavings=False, UTCDateTime=bad_date
        )
    assert fault_subcodes(info) == ["InvalidArgVal", "InvalidDateTime"]
    admin.SetNTP(FromDHCP=False, NTPManual=[])
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetSystemDateAndTime(DateTimeType="NTP", DaylightSavings=False)
    assert fault_subcodes(info) == ["InvalidArgVal", "NtpServerUndefined"]
    admin.SetNTP(
        FromDHCP=False,
        NTPManual=[
            {"Type": "DNS", "DNSname": "pool.ntp.org"},
            {"Type": "IPv4", "IPv4Address": "192.0.2.123"},
        ],
    )
    admin.SetSystemDateAndTime(DateTimeType="NTP", DaylightSavings=False)
    assert admin.GetSystemDateAndTime().DateTimeType == "NTP"
    ntp = admin.GetNTP()
    assert [h.DNSname or h.IPv4Address for h in ntp.NTPManual] == ["pool.ntp.org", "192.0.2.123"]


def test_iana_time_zone_is_accepted(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    admin.SetSystemDateAndTime(
        DateTimeType="Manual", DaylightSavings=False, TimeZone={"TZ": "Asia/Kolkata"}
    )
    answer = admin.GetSystemDateAndTime()
    utc, local = answer.UTCDateTime.Time, answer.LocalDateTime.Time
    minutes = ((local.Hour * 60 + local.Minute) - (utc.Hour * 60 + utc.Minute)) % (24 * 60)
    assert minutes == 330


def test_scopes(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    scopes = admin.GetScopes()
    fixed = [s.ScopeItem for s in scopes if s.ScopeDef == "Fixed"]
    assert "onvif://www.onvif.org/Profile/Streaming" in fixed
    assert "onvif://www.onvif.org/Profile/G" in fixed
    assert any(s.startswith("onvif://www.onvif.org/hardware/") for s in fixed)
    assert "onvif://www.onvif.org/name/onvif-nvr" in fixed  # Core: a fixed name scope
    configurable = [s.ScopeItem for s in scopes if s.ScopeDef == "Configurable"]
    assert configurable == ["onvif://www.onvif.org/location/unknown"]

    admin.SetScopes(
        ["onvif://www.onvif.org/name/Lobby%20NVR", "onvif://www.onvif.org/location/building/hq"]
    )
    admin.AddScopes(["onvif://www.onvif.org/location/floor/2"])
    configurable = [s.ScopeItem for s in admin.GetScopes() if s.ScopeDef == "Configurable"]
    assert configurable == [
        "onvif://www.onvif.org/name/Lobby%20NVR",
        "onvif://www.onvif.org/location/building/hq",
        "onvif://www.onvif.org/location/floor/2",
    ]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.RemoveScopes(["onvif://www.onvif.org/Profile/G"])
    assert fault_subcodes(info) == ["OperationProhibited", "FixedScope"]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.RemoveScopes(["onvif://www.onvif.org/location/nowhere"])
    assert fault_subcodes(info) == ["InvalidArgVal", "NoScope"]
    removed = admin.RemoveScopes(["onvif://www.onvif.org/location/floor/2"])
    assert removed == ["onvif://www.onvif.org/location/floor/2"]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.AddScopes([f"onvif://www.onvif.org/extra/{i}" for i in range(40)])
    assert fault_subcodes(info) == ["Action", "TooManyScopes"]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetScopes([f"onvif://www.onvif.org/extra/{i}" for i in range(40)])
    assert fault_subcodes(info) == ["Action", "TooManyScopes"]
    # With every configurable scope removed, the fixed ones keep the list non-empty.
    admin.RemoveScopes([s.ScopeItem for s in admin.GetScopes() if s.ScopeDef == "Configurable"])
    assert [s.ScopeDef for s in admin.GetScopes()] == ["Fixed"] * 6


def test_discovery_mode(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    assert admin.GetDiscoveryMode() == "Discoverable"
    admin.SetDiscoveryMode("NonDiscoverable")
    assert admin.GetDiscoveryMode() == "NonDiscoverable"


def test_user_management(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    admin.CreateUsers(
        [
            {"Username": "alice", "Password": "alice-pw-1", "UserLevel": "Operator"},
            {"Username": "bob", "Password": "bob-pw-1", "UserLevel": "User"},
        ]
    )
    users = {u.Username: u for u in admin.GetUsers()}
    assert {n: u.UserLevel for n, u in users.items()} == {
        "admin": "Administrator",
        "alice": "Operator",
        "bob": "User",
    }
    assert all(u.Password is None for u in users.values())
    _, alice = device_client(fresh_nvr.device_url, "alice", "alice-pw-1", digest=True)
    assert alice.GetDeviceInformation().Model

    cases = [
        (
            [{"Username": "alice", "Password": "x1", "UserLevel": "User"}],
            ["OperationProhibited", "UsernameClash"],
        ),
        (
            [{"Username": "carol", "Password": "p" * 65, "UserLevel": "User"}],
            ["OperationProhibited", "PasswordTooLong"],
        ),
        (
            [{"Username": "u" * 65, "Password": "pw", "UserLevel": "User"}],
            ["OperationProhibited", "UsernameTooLong"],
        ),
        (
            [{"Username": "anon", "Password": "pw", "UserLevel": "Anonymous"}],
            ["OperationProhibited", "AnonymousNotAllowed"],
        ),
        (
            [{"Username": "", "Password": "pw", "UserLevel": "User"}],
            ["OperationProhibited", "UsernameTooShort"],
        ),
    ]
    for users_arg, expected in cases:
        with pytest.raises(zeep.exceptions.Fault) as info:
            admin.CreateUsers(users_arg)
        assert fault_subcodes(info) == expected, users_arg
    # All or nothing: a clash in the second entry creates neither.
    with pytest.raises(zeep.exceptions.Fault):
        admin.CreateUsers(
            [
                {"Username": "dave", "Password": "pw-d", "UserLevel": "User"},
                {"Username": "bob", "Password": "x", "UserLevel": "User"},
            ]
        )
    assert "dave" not in {u.Username for u in admin.GetUsers()}

    admin.SetUser([{"Username": "bob", "Password": "bob-pw-2", "UserLevel": "Operator"}])
    assert {u.Username: u.UserLevel for u in admin.GetUsers()}["bob"] == "Operator"
    _, bob = device_client(fresh_nvr.device_url, "bob", "bob-pw-2")
    assert bob.GetDeviceInformation().Model
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetUser([{"Username": "nobody", "Password": "pw", "UserLevel": "User"}])
    assert fault_subcodes(info) == ["InvalidArgVal", "UsernameMissing"]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetUser([{"Username": "admin", "Password": ADMIN_PASSWORD, "UserLevel": "User"}])
    assert fault_subcodes(info) == ["InvalidArgVal", "FixedUser"]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.DeleteUsers(["admin"])
    assert fault_subcodes(info) == ["InvalidArgVal", "FixedUser"]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.DeleteUsers(["alice", "ghost"])
    assert fault_subcodes(info) == ["InvalidArgVal", "UsernameMissing"]
    admin.DeleteUsers(["alice"])
    assert "alice" not in {u.Username for u in admin.GetUsers()}
    _, gone = device_client(fresh_nvr.device_url, "alice", "alice-pw-1")
    with pytest.raises(zeep.exceptions.Fault) as info:
        gone.GetDeviceInformation()
    assert fault_subcodes(info) == ["NotAuthorized"]


def test_network_settings_are_stored_and_reported(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    interfaces = admin.GetNetworkInterfaces()
    assert interfaces and all(i.token for i in interfaces)
    assert all(len(i.Info.HwAddress.split(":")) == 6 for i in interfaces)
    token = interfaces[0].token
    answer = admin.SetNetworkInterfaces(
        token,
        {
            "Enabled": True,
            "MTU": 1400,
            "IPv4": {
                "Enabled": True,
                "DHCP": False,
                "Manual": [{"Address": "192.0.2.10", "PrefixLength": 24}],
            },
        },
    )
    assert answer is False  # RebootNeeded
    iface = next(i for i in admin.GetNetworkInterfaces() if i.token == token)
    assert iface.Info.MTU == 1400
    assert [(m.Address, m.PrefixLength) for m in iface.IPv4.Config.Manual] == [("192.0.2.10", 24)]
    for bad, subcode in (
        ({"MTU": 20}, "InvalidMtuValue"),
        (
            {"IPv4": {"Manual": [{"Address": "300.1.1.1", "PrefixLength": 24}]}},
            "InvalidIPv4Address",
        ),
    ):
        with pytest.raises(zeep.exceptions.Fault) as info:
            admin.SetNetworkInterfaces(token, bad)
        assert fault_subcodes(info) == ["InvalidArgVal", subcode]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetNetworkInterfaces("no-such-if", {"MTU": 1500})
    assert fault_subcodes(info) == ["InvalidArgVal", "InvalidNetworkInterface"]

    admin.SetHostname("nvr-lobby")
    assert admin.GetHostname().Name == "nvr-lobby"
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetHostname("bad_host!")
    assert fault_subcodes(info) == ["InvalidArgVal", "InvalidHostname"]

    admin.SetDNS(
        FromDHCP=False,
        SearchDomain=["example.org"],
        DNSManual=[{"Type": "IPv4", "IPv4Address": "192.0.2.53"}],
    )
    dns = admin.GetDNS()
    assert dns.SearchDomain == ["example.org"]
    assert [d.IPv4Address for d in dns.DNSManual] == ["192.0.2.53"]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetDNS(FromDHCP=False, DNSManual=[{"Type": "IPv4", "IPv4Address": "::1"}])
    assert fault_subcodes(info) == ["InvalidArgVal", "InvalidIPv4Address"]

    admin.SetNetworkDefaultGateway(IPv4Address=["192.0.2.1"])
    assert admin.GetNetworkDefaultGateway().IPv4Address == ["192.0.2.1"]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetNetworkDefaultGateway(IPv4Address=["nope"])
    assert fault_subcodes(info) == ["InvalidArgVal", "InvalidGatewayAddress"]

    admin.SetNetworkProtocols([{"Name": "RTSP", "Enabled": True, "Port": [554]}])
    protocols = {p.Name: p for p in admin.GetNetworkProtocols()}
    assert protocols["RTSP"].Port == [554]
    assert protocols["HTTP"].Port == [fresh_nvr.port]
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetNetworkProtocols([{"Name": "HTTPS", "Enabled": True, "Port": [443]}])
    assert fault_subcodes(info) == ["InvalidArgVal", "ServiceNotSupported"]


def test_system_and_access_logs(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    admin.GetDeviceInformation()
    access = admin.GetSystemLog("Access").String
    assert "admin device.GetDeviceInformation ok" in access
    system = admin.GetSystemLog("System").String
    assert "device service at" in system


def test_storage_configuration_reports_the_data_volume(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    configs = admin.GetStorageConfigurations()
    assert len(configs) == 1
    data = configs[0].Data
    assert data.LocalPath == str(fresh_nvr.data_dir.resolve())
    volume = data.Extension._value_1[0]
    values = {etree.QName(child).localname: child.text for child in volume}
    assert int(values["TotalBytes"]) > int(values["FreeBytes"]) > 0
    assert admin.GetStorageConfiguration("storage0").Data.type == "LocalStorage"


def test_system_reboot_restarts_and_keeps_serving(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    admin.SetHostname("before-reboot")
    message = admin.SystemReboot()
    assert "Restarting" in message
    fresh_nvr.wait_serving(count=2)
    time.sleep(0.2)
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    assert admin.GetHostname().Name == "before-reboot"
