"""Every answer of every implemented Device operation, faults included, validates against
the official ONVIF XSD (the schema embedded in devicemgmt.wsdl and what it imports) and the
SOAP 1.2 envelope schema, checked by libxml2 through lxml on the raw bytes from the wire.

Requests are built by hand (tests/soaputil.py): WS-UsernameToken with a PasswordDigest
computed with hashlib, or HTTP Digest by requests, so nothing here depends on zeep's view.
"""

from __future__ import annotations

import copy
import dataclasses
import posixpath
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from lxml import etree
from requests.auth import HTTPDigestAuth

from onvif_nvr.app import coverage_report
from onvif_nvr.wsdl.catalog import DEVICE, ServiceDef, load_binding, wsdl_root
from tests.conftest import ADMIN_PASSWORD
from tests.nvrproc import NvrProcess
from tests.soaputil import SOAP12, envelope, post, username_token

XS = "http://www.w3.org/2001/XMLSchema"
TDS = DEVICE.namespace
TT = "http://www.onvif.org/ver10/schema"
SOAP_ENVELOPE_XSD = "schema/common/soap-envelope"
#: Where the tds schema embedded in the WSDL is written: next to it, so its imports resolve.
TDS_XSD = posixpath.splitext(DEVICE.wsdl)[0] + ".xsd"
#: Operations after which the box restarts (a second "serving" line).
RESTARTING = {"SystemReboot", "SetSystemFactoryDefault"}
#: An NVR has no Wi-Fi, so this one stays unimplemented and answers ActionNotSupported.
UNIMPLEMENTED = "ScanAvailableDot11Networks"
RESPONSE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


# -- the schema ------------------------------------------------------------------------------
class _Recorder(etree.Resolver):
    """Notes every document libxml2 loads while compiling, to prove it stayed local."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def resolve(self, system_url: str, public_id: str | None, context: object) -> None:
        self.urls.append(system_url)
        return None


def _narrow_wildcards(schema: etree._Element) -> None:
    """Let a wildcard next to element declarations match only foreign namespaces.

    The ONVIF types end in ``<xs:any namespace="##any"/>`` after optional elements of
    their own namespace ("first Vendor then ONVIF"), which is ambiguous under XSD 1.0's
    Unique Particle Attribution; libxml2 implements XSD 1.0 and refuses to compile them
    ("The content model is not determinist"). With ``##other`` vendor extensions still
    validate; a same-namespace element the schema does not declare there is rejected,
    which is stricter than the standard and never needed by our answers.
    """
    for wildcard in schema.iter(f"{{{XS}}}any"):
        if wildcard.get("namespace", "##any") not in ("##any", "##targetNamespace"):
            continue
        parent = wildcard.getparent()
        if parent is not None and any(c.tag == f"{{{XS}}}element" for c in parent):
            wildcard.set("namespace", "##other")


def _schema_closure(dest: Path, service: ServiceDef = DEVICE) -> None:
    """Copy the service WSDL's embedded schema (written at ``<wsdl without .wsdl>.xsd``)
    and every schema it reaches, in the same layout, so their relative schemaLocations
    resolve inside ``dest``."""
    root = wsdl_root()
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    wsdl = etree.parse(str(root / service.wsdl), parser)
    embedded = wsdl.find(f".//{{{XS}}}schema")
    assert embedded is not None and embedded.get("targetNamespace") == service.namespace
    # A root of its own with every prefix in scope at the WSDL (QName-valued attributes use them).
    tds = etree.Element(embedded.tag, attrib=dict(embedded.attrib), nsmap=embedded.nsmap)
    tds.extend(copy.deepcopy(child) for child in embedded)
    pending = [(posixpath.splitext(service.wsdl)[0] + ".xsd", tds)]
    pending.append(
        (SOAP_ENVELOPE_XSD, etree.parse(str(root / SOAP_ENVELOPE_XSD), parser).getroot())
    )
    done: set[str] = set()
    while pending:
        relative, schema = pending.pop()
        if relative in done:
            continue
        done.add(relative)
        for ref in schema.iterchildren(f"{{{XS}}}import", f"{{{XS}}}include", f"{{{XS}}}redefine"):
            location = ref.get("schemaLocation")
            if location:
                target = posixpath.normpath(posixpath.join(posixpath.dirname(relative), location))
                pending.append((target, etree.parse(str(root / target), parser).getroot()))
        _narrow_wildcards(schema)
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        (dest / relative).write_bytes(
            etree.tostring(schema, xml_declaration=True, encoding="UTF-8")
        )


@pytest.fixture(scope="session")
def schema(tmp_path_factory: pytest.TempPathFactory) -> etree.XMLSchema:
    """tds + tt + SOAP 1.2 envelope, compiled from local files only."""
    dest = tmp_path_factory.mktemp("xsd")
    _schema_closure(dest)
    (dest / "wrapper.xsd").write_text(
        f'<xs:schema xmlns:xs="{XS}" targetNamespace="urn:onvif-nvr:test:wrapper">'
        f'<xs:import namespace="{SOAP12}" schemaLocation="{SOAP_ENVELOPE_XSD}"/>'
        f'<xs:import namespace="{TDS}" schemaLocation="{TDS_XSD}"/>'
        "</xs:schema>"
    )
    recorder = _Recorder()
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    parser.resolvers.add(recorder)
    compiled = etree.XMLSchema(etree.parse(str(dest / "wrapper.xsd"), parser))
    outside = [url for url in recorder.urls if not Path(url).is_relative_to(dest)]
    assert not outside, f"the schema pulled documents from outside {dest}: {outside}"
    return compiled


@pytest.fixture(scope="session")
def response_tags() -> dict[str, str]:
    """Operation name -> Clark name of its response element, from the WSDL."""
    binding = load_binding(DEVICE)
    return {name: op.output.qname.text for name, op in binding.operations.items()}


def implemented_operations() -> set[str]:
    """The ``[x]`` lines of the device block of ``onvif-nvr coverage``."""
    lines = iter(coverage_report().splitlines())
    for line in lines:
        if line.startswith(f"{DEVICE.key} ("):
            break
    names = set()
    for line in lines:
        if not line.startswith("  ["):
            break
        if line.startswith("  [x] "):
            names.add(line[len("  [x] ") :].strip())
    return names


def assert_valid(schema: etree.XMLSchema, element: etree._Element, what: str) -> None:
    if not schema.validate(element):
        errors = "\n".join(f"  line {e.line}: {e.message}" for e in schema.error_log)
        raise AssertionError(f"{what} does not validate:\n{errors}")


def validated_body_child(schema: etree.XMLSchema, response: requests.Response) -> etree._Element:
    """Parse the answer, validate the whole envelope (Body content is laxly checked there),
    then the single Body child on its own, which needs a global declaration: strict."""
    doc = etree.fromstring(response.content, RESPONSE_PARSER)
    assert doc.tag == f"{{{SOAP12}}}Envelope"
    assert_valid(schema, doc, "the envelope")
    body = doc.find(f"{{{SOAP12}}}Body")
    assert body is not None
    children = list(body)
    assert len(children) == 1, [c.tag for c in children]
    assert_valid(schema, children[0], etree.QName(children[0]).localname)
    return children[0]


# -- requests --------------------------------------------------------------------------------
def request_element(operation: str, body: str = "") -> str:
    return f'<tds:{operation} xmlns:tds="{TDS}" xmlns:tt="{TT}">{body}</tds:{operation}>'


@dataclasses.dataclass(frozen=True)
class Device:
    url: str

    def signed(
        self, operation: str, body: str = "", user: str = "admin", password: str = ADMIN_PASSWORD
    ) -> requests.Response:
        """WS-UsernameToken with PasswordDigest."""
        return post(
            self.url, envelope(request_element(operation, body), username_token(user, password))
        )

    def digest(
        self, operation: str, body: str = "", user: str = "admin", password: str = ADMIN_PASSWORD
    ) -> requests.Response:
        return post(
            self.url,
            envelope(request_element(operation, body)),
            auth=HTTPDigestAuth(user, password),
        )

    def anonymous(self, operation: str, body: str = "") -> requests.Response:
        return post(self.url, envelope(request_element(operation, body)))

    def raw(self, data: bytes) -> requests.Response:
        return post(self.url, data)

    def ok(self, operation: str, body: str = "") -> etree._Element:
        """Set the stage: the call must succeed; returns the response element."""
        response = self.signed(operation, body)
        assert response.status_code == 200, f"{operation}: {response.text}"
        return etree.fromstring(response.content, RESPONSE_PARSER).find(f"{{{SOAP12}}}Body")[0]


def _interface(device: Device) -> str:
    """A SetNetworkInterfaces body for a real interface, keeping its MTU."""
    answer = device.ok("GetNetworkInterfaces")
    first = answer.find(f"{{{TDS}}}NetworkInterfaces")
    assert first is not None, "the box reports no network interface"
    mtu = first.findtext(f"{{{TT}}}Info/{{{TT}}}MTU") or "1500"
    return (
        f"<tds:InterfaceToken>{first.get('token')}</tds:InterfaceToken>"
        f"<tds:NetworkInterface><tt:Enabled>true</tt:Enabled><tt:MTU>{mtu}</tt:MTU>"
        "<tt:IPv4><tt:Enabled>true</tt:Enabled><tt:DHCP>true</tt:DHCP></tt:IPv4>"
        "</tds:NetworkInterface>"
    )


OPERATOR = (
    "<tds:User><tt:Username>operator1</tt:Username><tt:Password>Op3rator-pass</tt:Password>"
    "<tt:UserLevel>Operator</tt:UserLevel></tds:User>"
)
NTP_SERVER = (
    "<tds:FromDHCP>false</tds:FromDHCP>"
    "<tds:NTPManual><tt:Type>DNS</tt:Type><tt:DNSname>ntp.example.org</tt:DNSname></tds:NTPManual>"
)
EXTRA_SCOPE = "onvif://www.onvif.org/location/building/lab"


@dataclasses.dataclass(frozen=True)
class Call:
    """One successful request of ``operation`` whose answer must validate."""

    operation: str
    body: str | Callable[[Device], str] = ""
    variant: str = ""
    #: Changes settings, users or restarts: runs on an NVR of its own.
    state: bool = False
    #: Requests that set the stage; each must succeed.
    before: tuple[tuple[str, str], ...] = ()
    auth: str = "token"  # "token", "digest" or "none"

    @property
    def id(self) -> str:
        return f"{self.operation}-{self.variant}" if self.variant else self.operation


CALLS = [
    # identity, capabilities
    Call("GetDeviceInformation"),
    Call("GetDeviceInformation", variant="http-digest", auth="digest"),
    Call("GetEndpointReference"),
    Call("GetWsdlUrl"),
    Call("GetServiceCapabilities"),
    Call("GetServices", "<tds:IncludeCapability>false</tds:IncludeCapability>"),
    Call(
        "GetServices", "<tds:IncludeCapability>true</tds:IncludeCapability>", variant="capabilities"
    ),
    Call("GetCapabilities"),
    Call("GetCapabilities", "<tds:Category>Device</tds:Category>", variant="device"),
    # time
    Call("GetSystemDateAndTime"),
    Call("GetSystemDateAndTime", variant="unauthenticated", auth="none"),
    Call(
        "SetSystemDateAndTime",
        "<tds:DateTimeType>NTP</tds:DateTimeType><tds:DaylightSavings>true</tds:DaylightSavings>"
        "<tds:TimeZone><tt:TZ>CET-1CEST,M3.5.0,M10.5.0/3</tt:TZ></tds:TimeZone>",
        variant="ntp",
        state=True,
        before=(("SetNTP", NTP_SERVER),),
    ),
    Call(
        "SetSystemDateAndTime",
        # Stored, not applied: host.apply_network_settings is off by default.
        "<tds:DateTimeType>Manual</tds:DateTimeType>"
        "<tds:DaylightSavings>false</tds:DaylightSavings>"
        "<tds:TimeZone><tt:TZ>UTC0</tt:TZ></tds:TimeZone><tds:UTCDateTime>"
        "<tt:Time><tt:Hour>3</tt:Hour><tt:Minute>4</tt:Minute><tt:Second>5</tt:Second></tt:Time>"
        "<tt:Date><tt:Year>2030</tt:Year><tt:Month>1</tt:Month><tt:Day>2</tt:Day></tt:Date>"
        "</tds:UTCDateTime>",
        variant="manual",
        state=True,
    ),
    # scopes, discovery
    Call("GetScopes"),
    Call("SetScopes", f"<tds:Scopes>{EXTRA_SCOPE}</tds:Scopes>", state=True),
    Call("AddScopes", f"<tds:ScopeItem>{EXTRA_SCOPE}</tds:ScopeItem>", state=True),
    Call(
        "RemoveScopes",
        f"<tds:ScopeItem>{EXTRA_SCOPE}</tds:ScopeItem>",
        state=True,
        before=(("AddScopes", f"<tds:ScopeItem>{EXTRA_SCOPE}</tds:ScopeItem>"),),
    ),
    Call("GetDiscoveryMode"),
    Call("SetDiscoveryMode", "<tds:DiscoveryMode>NonDiscoverable</tds:DiscoveryMode>", state=True),
    # users
    Call("GetUsers"),
    Call("CreateUsers", OPERATOR, state=True),
    Call(
        "SetUser",
        "<tds:User><tt:Username>operator1</tt:Username><tt:Password>An0ther-pass</tt:Password>"
        "<tt:UserLevel>User</tt:UserLevel></tds:User>",
        state=True,
        before=(("CreateUsers", OPERATOR),),
    ),
    Call(
        "DeleteUsers",
        "<tds:Username>operator1</tds:Username>",
        state=True,
        before=(("CreateUsers", OPERATOR),),
    ),
    # network (stored, not applied: host.apply_network_settings is off by default)
    Call("GetHostname"),
    Call("SetHostname", "<tds:Name>nvr-under-test</tds:Name>", state=True),
    Call("GetDNS"),
    Call(
        "SetDNS",
        "<tds:FromDHCP>false</tds:FromDHCP><tds:SearchDomain>example.org</tds:SearchDomain>"
        "<tds:DNSManual><tt:Type>IPv4</tt:Type><tt:IPv4Address>192.0.2.53</tt:IPv4Address>"
        "</tds:DNSManual>",
        state=True,
    ),
    Call("GetNTP"),
    Call("SetNTP", NTP_SERVER, state=True),
    Call("GetNetworkInterfaces"),
    Call("SetNetworkInterfaces", _interface, state=True),
    Call("GetNetworkProtocols"),
    Call(
        "SetNetworkProtocols",
        "<tds:NetworkProtocols><tt:Name>RTSP</tt:Name><tt:Enabled>true</tt:Enabled>"
        "<tt:Port>8554</tt:Port></tds:NetworkProtocols>",
        state=True,
    ),
    Call("GetNetworkDefaultGateway"),
    Call(
        "SetNetworkDefaultGateway",
        "<tds:IPv4Address>192.0.2.1</tds:IPv4Address>",
        state=True,
    ),
    # system
    Call("GetSystemLog", "<tds:LogType>System</tds:LogType>"),
    Call("GetSystemLog", "<tds:LogType>Access</tds:LogType>", variant="access"),
    Call("GetStorageConfigurations"),
    Call("GetStorageConfiguration", "<tds:Token>storage0</tds:Token>"),
    Call("SystemReboot", state=True),
    Call("SetSystemFactoryDefault", "<tds:FactoryDefault>Soft</tds:FactoryDefault>", state=True),
]


def test_every_implemented_operation_has_a_call():
    covered = {call.operation for call in CALLS}
    implemented = implemented_operations()
    assert implemented, "no implemented device operation found in the coverage report"
    assert sorted(implemented - covered) == [], "implemented but not validated here"
    assert sorted(covered - implemented) == [], "validated here but not implemented"
    assert UNIMPLEMENTED not in implemented


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.id)
def test_response_validates(call: Call, request: pytest.FixtureRequest, schema, response_tags):
    nvr: NvrProcess = request.getfixturevalue("fresh_nvr" if call.state else "nvr")
    device = Device(nvr.device_url)
    for operation, body in call.before:
        device.ok(operation, body)
    body = call.body(device) if callable(call.body) else call.body
    # Our own request must be valid too, or a refusal would be our fault.
    assert_valid(schema, etree.fromstring(request_element(call.operation, body)), "the request")
    send = {"token": device.signed, "digest": device.digest, "none": device.anonymous}[call.auth]
    response = send(call.operation, body)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/soap+xml")
    answer = validated_body_child(schema, response)
    assert answer.tag == response_tags[call.operation]
    if call.operation in RESTARTING:
        # Let the restart finish before the fixture stops the process.
        nvr.wait_serving(count=2)


# -- faults ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FaultCase:
    """A request that must be refused with ``codes`` (Code value, then Subcode values)."""

    id: str
    send: Callable[[Device], requests.Response]
    status: int
    codes: tuple[str, ...]
    state: bool = False


def _ntp_without_server(device: Device) -> requests.Response:
    device.ok("SetNTP", "<tds:FromDHCP>false</tds:FromDHCP>")
    return device.signed(
        "SetSystemDateAndTime",
        "<tds:DateTimeType>NTP</tds:DateTimeType><tds:DaylightSavings>false</tds:DaylightSavings>",
    )


def _below_the_access_class(device: Device) -> requests.Response:
    device.ok("CreateUsers", OPERATOR)
    return device.signed("CreateUsers", OPERATOR, user="operator1", password="Op3rator-pass")


def _last_administrator(device: Device) -> requests.Response:
    return device.signed("DeleteUsers", "<tds:Username>admin</tds:Username>")


FAULTS = [
    FaultCase(
        "ActionNotSupported",
        lambda d: d.signed(UNIMPLEMENTED),
        500,
        ("s:Receiver", "ter:ActionNotSupported"),
    ),
    FaultCase(
        "not-an-operation",
        lambda d: d.signed("NoSuchOperation"),
        500,
        ("s:Receiver", "ter:ActionNotSupported"),
    ),
    FaultCase(
        "no-credentials", lambda d: d.anonymous("GetUsers"), 401, ("s:Sender", "ter:NotAuthorized")
    ),
    FaultCase(
        "wrong-password-token",
        lambda d: d.signed("GetUsers", password="wrong"),
        400,
        ("s:Sender", "ter:NotAuthorized"),
    ),
    FaultCase(
        "wrong-password-digest",
        lambda d: d.digest("GetUsers", password="wrong"),
        401,
        ("s:Sender", "ter:NotAuthorized"),
    ),
    FaultCase(
        "below-access-class",
        _below_the_access_class,
        400,
        ("s:Sender", "ter:NotAuthorized"),
        state=True,
    ),
    FaultCase(
        "NoConfig",
        lambda d: d.signed("GetStorageConfiguration", "<tds:Token>nope</tds:Token>"),
        400,
        ("s:Sender", "ter:InvalidArgVal", "ter:NoConfig"),
    ),
    FaultCase(
        "InvalidArgVal",
        lambda d: d.signed("GetSystemLog", "<tds:LogType>Bogus</tds:LogType>"),
        400,
        ("s:Sender", "ter:InvalidArgVal"),
    ),
    FaultCase(
        "NoSuchService",
        lambda d: d.signed("GetCapabilities", "<tds:Category>PTZ</tds:Category>"),
        500,
        ("s:Receiver", "ter:ActionNotSupported", "ter:NoSuchService"),
    ),
    FaultCase(
        "FixedScope",
        lambda d: d.signed(
            "RemoveScopes", "<tds:ScopeItem>onvif://www.onvif.org/Profile/G</tds:ScopeItem>"
        ),
        400,
        ("s:Sender", "ter:OperationProhibited", "ter:FixedScope"),
    ),
    FaultCase(
        "UsernameClash",
        lambda d: d.signed(
            "CreateUsers",
            "<tds:User><tt:Username>admin</tt:Username><tt:Password>Whatever-1</tt:Password>"
            "<tt:UserLevel>User</tt:UserLevel></tds:User>",
        ),
        400,
        ("s:Sender", "ter:OperationProhibited", "ter:UsernameClash"),
    ),
    FaultCase(
        "FixedUser",
        _last_administrator,
        400,
        ("s:Sender", "ter:InvalidArgVal", "ter:FixedUser"),
        state=True,
    ),
    FaultCase(
        "NtpServerUndefined",
        _ntp_without_server,
        400,
        ("s:Sender", "ter:InvalidArgVal", "ter:NtpServerUndefined"),
        state=True,
    ),
    FaultCase(
        "WellFormed",
        lambda d: d.raw(envelope(request_element("GetUsers"))[:-20]),
        400,
        ("s:Sender", "ter:WellFormed"),
    ),
    FaultCase("empty-Body", lambda d: d.raw(envelope("")), 400, ("s:Sender", "ter:Tag")),
    FaultCase(
        "VersionMismatch",
        lambda d: d.raw(b'<e:Envelope xmlns:e="urn:not-soap"><e:Body/></e:Envelope>'),
        500,
        ("s:VersionMismatch",),
    ),
    FaultCase(
        "MustUnderstand",
        lambda d: d.raw(
            envelope(
                request_element("GetHostname"),
                f'<x:Unknown xmlns:x="urn:unknown" xmlns:s="{SOAP12}" s:mustUnderstand="true"/>',
            )
        ),
        500,
        ("s:MustUnderstand",),
    ),
]


@pytest.mark.parametrize("case", FAULTS, ids=lambda c: c.id)
def test_fault_validates(case: FaultCase, request: pytest.FixtureRequest, schema):
    nvr: NvrProcess = request.getfixturevalue("fresh_nvr" if case.state else "nvr")
    response = case.send(Device(nvr.device_url))
    assert response.status_code == case.status, response.text
    fault = validated_body_child(schema, response)
    assert fault.tag == f"{{{SOAP12}}}Fault"
    ns = {"s": SOAP12}
    codes = [fault.findtext("s:Code/s:Value", namespaces=ns)]
    codes += [v.text for v in fault.iterfind("s:Code//s:Subcode/s:Value", namespaces=ns)]
    assert tuple(codes) == case.codes
    assert fault.findtext("s:Reason/s:Text", namespaces=ns)


def test_schema_rejects_a_broken_answer(nvr, schema):
    """Guard against a vacuous pass: the same checks refuse a real answer made invalid."""
    response = Device(nvr.device_url).signed("GetDeviceInformation")
    doc = etree.fromstring(response.content, RESPONSE_PARSER)
    answer = doc.find(f"{{{SOAP12}}}Body/{{{TDS}}}GetDeviceInformationResponse")
    answer.remove(answer.find(f"{{{TDS}}}Model"))
    assert not schema.validate(doc)
    assert not schema.validate(answer)
    assert [e.message for e in schema.error_log] == [
        f"Element '{{{TDS}}}FirmwareVersion': This element is not expected. "
        f"Expected is ( {{{TDS}}}Model )."
    ]
