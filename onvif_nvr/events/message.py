"""Event messages: what happened (topic), to what (Source, Key items), the details (Data
items), when (UtcTime) and, for a property, the PropertyOperation (Core §9.4)."""

from __future__ import annotations

import dataclasses
import enum

from onvif_nvr.events.topics import Topic


@dataclasses.dataclass(frozen=True)
class SimpleItem:
    name: str
    value: str


@dataclasses.dataclass(frozen=True)
class ElementItem:
    """An item whose value is one XML element, kept serialized (so messages stay
    immutable and comparable)."""

    name: str
    xml: bytes


Item = SimpleItem | ElementItem


class PropertyOperation(enum.StrEnum):
    INITIALIZED = "Initialized"
    CHANGED = "Changed"
    DELETED = "Deleted"


#: Identity of a property instance: its topic plus its Source and Key items.
InstanceKey = tuple[Topic, tuple[Item, ...], tuple[Item, ...]]


@dataclasses.dataclass(frozen=True)
class Message:
    topic: Topic
    #: When the event happened (not when it is sent), ns since the Unix epoch, UTC.
    utc_ns: int
    source: tuple[Item, ...] = ()
    key: tuple[Item, ...] = ()
    data: tuple[Item, ...] = ()
    operation: PropertyOperation | None = None

    @property
    def instance(self) -> InstanceKey:
        return (self.topic, self.source, self.key)

    def items(self) -> tuple[Item, ...]:
        return (*self.source, *self.key, *self.data)

    def as_operation(self, operation: PropertyOperation) -> Message:
        return dataclasses.replace(self, operation=operation)


def simple_items(values: dict[str, str | bool | int] | None) -> tuple[SimpleItem, ...]:
    """``{"Token": "volume1", "Failed": True}`` as SimpleItems, booleans written as the
    XSD writes them."""
    out = []
    for name, value in (values or {}).items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append(SimpleItem(name, text))
    return tuple(out)
