"""Base Device Test Specification cases (DEVICE-*, SECURITY-*) for the Device service."""

from __future__ import annotations

import urllib.parse

import pytest
import requests
import zeep.exceptions
from lxml import etree
from requests.auth import HTTPDigestAuth

from tests.clients import device_client
from tests.conftest import ADMIN_PASSWORD
from tests.soaputil import envelope, op, post, username_token

TDS = "http://www.onvif.org/ver10/device/wsdl"


def subcodes(info: pytest.ExceptionInfo) -> list[str]:
    return [q.localname for q in info.value.subcodes or []]


def test_DEVICE_1_1_2_all_capabilities(admin):
    caps = admin.GetCapabilities(["All"])
    assert caps.Device.XAddr and caps.Device.System.SupportedVersions


def test_DEVICE_1_1_9_soap_fault_message(admin):
    r = post(
        admin._binding_options["address"],
        envelope(op("GetCapabilities", "<tds:Category>NoSuchCategory</tds:Category>")),
    )
    root = etree.fromstring(r.content)
    assert root.find(".//{http://www.w3.org/2003/05/soap-envelope}Fault") is not None


def test_DEVICE_1_1_13_get_services_device_service(anonymous, nvr):
    services = {s.Namespace: s for s in anonymous.GetServices(False)}
    assert services[TDS].XAddr == nvr.device_url


def test_DEVICE_1_1_18_and_19_device_service_capabilities_consistency(anonymous):
    direct = anonymous.GetServiceCapabilities()
    embedded = next(
        s for s in anonymous.GetServices(True) if s.Namespace == TDS
    ).Capabilities._value_1
    for section in ("Network", "Security", "System"):
        a, b = getattr(direct, section), getattr(embedded, section)
        for key in a:
            assert a[key] == b[key], f"{section}.{key}"


def test_DEVICE_1_1_30_get_services_and_get_capabilities_consistency(anonymous):
    services = {s.Namespace: s.XAddr for s in anonymous.GetServices(False)}
    caps = anonymous.GetCapabilities(["All"])
    assert caps.Device.XAddr == services[TDS]
    assert caps.Media.XAddr == services["http://www.onvif.org/ver10/media/wsdl"]
    assert caps.Events.XAddr == services["http://www.onvif.org/ver10/events/wsdl"]


def test_DEVICE_1_1_31_get_services_xaddr(nvr):
    url = f"http://localhost:{nvr.port}/onvif/device_service"
    _, client = device_client(url)
    for service in client.GetServices(False):
        parts = urllib.parse.urlsplit(service.XAddr)
        assert (parts.scheme, parts.hostname, parts.port) == ("http", "localhost", nvr.port)


def test_DEVICE_2_1_1_hostname(anonymous):
    assert anonymous.GetHostname().Name


def test_DEVICE_2_1_3_set_hostname_error_case(admin):
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetHostname("Home_Camera!")
    assert subcodes(info) == ["InvalidArgVal", "InvalidHostname"]


def test_DEVICE_3_1_1_get_system_date_and_time(anonymous):
    answer = anonymous.GetSystemDateAndTime()
    assert answer.UTCDateTime is not None and answer.DateTimeType in ("Manual", "NTP")


def test_DEVICE_3_1_4_invalid_timezone(admin):
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetSystemDateAndTime(
            DateTimeType="Manual", DaylightSavings=False, TimeZone={"TZ": "INVALIDTIMEZONE"}
        )
    assert subcodes(info) == ["InvalidArgVal", "InvalidTimeZone"]


def test_DEVICE_3_1_5_invalid_date(admin):
    bad = {
        "Time": {"Hour": 30, "Minute": 61, "Second": 61},
        "Date": {"Year": 10000, "Month": 13, "Day": 32},
    }
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.SetSystemDateAndTime(DateTimeType="Manual", DaylightSavings=False, UTCDateTime=bad)
    assert subcodes(info) == ["InvalidArgVal", "InvalidDateTime"]


def test_DEVICE_3_1_8_reboot(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    assert admin.SystemReboot()
    fresh_nvr.wait_serving(count=2)
    assert admin.GetDeviceInformation().Model


def test_DEVICE_3_1_9_device_information(admin):
    info = admin.GetDeviceInformation()
    assert all(
        getattr(info, k)
        for k in ("Manufacturer", "Model", "FirmwareVersion", "SerialNumber", "HardwareId")
    )


def test_DEVICE_3_1_10_get_system_log(admin):
    assert admin.GetSystemLog("System").String is not None


def test_DEVICE_4_1_1_get_users(admin):
    users = admin.GetUsers()
    assert users and all(u.Password is None for u in users)


def test_DEVICE_4_1_3_create_users_error_case(admin):
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.CreateUsers([{"Username": "admin", "Password": "whatever", "UserLevel": "User"}])
    assert subcodes(info) == ["OperationProhibited", "UsernameClash"]


def test_DEVICE_4_1_5_delete_users_error_case(admin):
    with pytest.raises(zeep.exceptions.Fault) as info:
        admin.DeleteUsers(["no-such-user-4-1-5"])
    assert subcodes(info) == ["InvalidArgVal", "UsernameMissing"]


def test_DEVICE_4_1_4_7_9_create_set_delete_users(fresh_nvr):
    _, admin = device_client(fresh_nvr.device_url, "admin", ADMIN_PASSWORD)
    admin.CreateUsers([{"Username": "ONVIFTest1", "Password": "OnvifTest123", "UserLevel": "User"}])
    admin.SetUser(
        [{"Username": "ONVIFTest1", "Password": "OnvifTest1234", "UserLevel": "Operator"}]
    )
    assert {u.Username: u.UserLevel for u in admin.GetUsers()}["ONVIFTest1"] == "Operator"
    admin.DeleteUsers(["ONVIFTest1"])
    assert "ONVIFTest1" not in {u.Username for u in admin.GetUsers()}


NAMESPACE_VARIANTS = {
    # DEVICE-6-1-1: default namespaces on every tag.
    "6-1-1": '<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Body xmlns="http://www.w3.org/2003/05/soap-envelope">'
    '<GetScopes xmlns="http://www.onvif.org/ver10/device/wsdl"/></Body></Envelope>',
    # DEVICE-6-1-2: default namespace on the parent only.
    "6-1-2": '<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Body><GetScopes xmlns="http://www.onvif.org/ver10/device/wsdl"/></Body></Envelope>',
    # DEVICE-6-1-3: non-standard prefixes.
    "6-1-3": '<zz:Envelope xmlns:zz="http://www.w3.org/2003/05/soap-envelope" xmlns:qq="http://www.onvif.org/ver10/device/wsdl"><zz:Body><qq:GetScopes/></zz:Body></zz:Envelope>',
    # DEVICE-6-1-4: different prefixes for the same namespace.
    "6-1-4": '<a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope"><b:Body xmlns:b="http://www.w3.org/2003/05/soap-envelope"><c:GetScopes xmlns:c="http://www.onvif.org/ver10/device/wsdl"/></b:Body></a:Envelope>',
    # DEVICE-6-1-5: the same prefix bound to different namespaces.
    "6-1-5": '<p:Envelope xmlns:p="http://www.w3.org/2003/05/soap-envelope"><p:Body><p:GetScopes xmlns:p="http://www.onvif.org/ver10/device/wsdl"/></p:Body></p:Envelope>',
}


@pytest.mark.parametrize("case", sorted(NAMESPACE_VARIANTS))
def test_DEVICE_6_1_namespaces(nvr, case):
    r = post(
        nvr.device_url,
        NAMESPACE_VARIANTS[case].encode(),
        auth=HTTPDigestAuth("admin", ADMIN_PASSWORD),
    )
    assert r.status_code == 200, r.text
    root = etree.fromstring(r.content)
    assert root.find(f".//{{{TDS}}}GetScopesResponse") is not None


def test_SECURITY_1_1_1_user_token_profile(nvr):
    for drop in (("Nonce",), ("Created",), ("Type",)):
        r = post(
            nvr.device_url,
            envelope(op("GetUsers"), username_token("admin", ADMIN_PASSWORD, drop=drop)),
        )
        assert r.status_code == 400 and b"NotAuthorized" in r.content, drop
    ok = post(nvr.device_url, envelope(op("GetUsers"), username_token("admin", ADMIN_PASSWORD)))
    assert ok.status_code == 200


def test_SECURITY_1_1_2_digest_authentication(nvr):
    r = post(nvr.device_url, envelope(op("GetDeviceInformation")))
    assert r.status_code == 401
    assert "Digest" in r.headers["WWW-Authenticate"] and "nonce=" in r.headers["WWW-Authenticate"]
    ok = requests.post(
        nvr.device_url,
        data=envelope(op("GetDeviceInformation")),
        headers={"Content-Type": "application/soap+xml"},
        auth=HTTPDigestAuth("admin", ADMIN_PASSWORD),
        timeout=10,
    )
    assert ok.status_code == 200
