"""Small helpers shared by the SOAP service modules: ONVIF time and value formats."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any, Protocol

from lxml import etree

from onvif_nvr.soap.dispatch import CallContext
from onvif_nvr.wsdl.catalog import Binding

UTC = datetime.UTC


def child_named(parent: etree._Element | None, local: str) -> etree._Element | None:
    """A child element by local name, whatever its namespace (requests mix prefixes such as
    tev: and wsnt:, and read raw bodies keep them)."""
    if parent is None:
        return None
    for element in parent:
        if isinstance(element.tag, str) and etree.QName(element).localname == local:
            return element
    return None


def datetime_fields(dt: datetime.datetime) -> dict[str, Any]:
    """A ``tt:DateTime`` value (Time before Date, as the schema orders them)."""
    return {
        "Time": {"Hour": dt.hour, "Minute": dt.minute, "Second": dt.second},
        "Date": {"Year": dt.year, "Month": dt.month, "Day": dt.day},
    }


def wall_ns_to_datetime(wall_ns: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(wall_ns // 10**9, tz=UTC)


def optional(value: Any, name: str, default: Any = None) -> Any:
    """Read an optional field of a zeep value (absent and None look alike)."""
    return getattr(value, name, default) if value is not None else default


class Lifecycle(Protocol):
    """What the device service may ask of the running process."""

    def request_reboot(self) -> None: ...

    def request_factory_default(self, hard: bool) -> None: ...


@dataclasses.dataclass(frozen=True)
class AdvertisedService:
    """A service listed by GetServices / GetCapabilities."""

    namespace: str
    path: str
    version: tuple[int, int]
    #: The service's own ``Capabilities`` element for GetServices(IncludeCapability).
    capabilities: Callable[[CallContext], etree._Element]
    #: Field name in GetCapabilities (``Device``, ``Events``...; ``Extension.Recording``...).
    legacy_field: str | None = None
    #: Values of that field besides ``XAddr``.
    legacy_capabilities: Callable[[CallContext], dict[str, Any]] | None = None

    @classmethod
    def of(
        cls,
        binding: Binding,
        capabilities: Callable[[CallContext], etree._Element],
        legacy_field: str,
        legacy_capabilities: Callable[[CallContext], dict[str, Any]],
    ) -> AdvertisedService:
        """The entry of a served binding: its namespace, path and version come with it."""
        return cls(
            namespace=binding.service.namespace,
            path=binding.service.path,
            version=binding.version,
            capabilities=capabilities,
            legacy_field=legacy_field,
            legacy_capabilities=legacy_capabilities,
        )


def render_service_capabilities(binding: Binding, value: dict[str, Any]) -> etree._Element:
    """Render a service's ``Capabilities`` element through its GetServiceCapabilities
    response type, so the embedded copy in GetServices is typed by the schema too."""
    holder = etree.Element("holder")
    binding.operations["GetServiceCapabilities"].output.render(  # type: ignore[no-untyped-call]
        holder, {"Capabilities": value}
    )
    return holder[0][0]
