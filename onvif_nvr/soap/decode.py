"""A request reader for the plain shape of flat operations, without zeep's parser.

zeep's ``Element.parse`` costs ≈ 60 µs even for a two-field request such as PullMessages,
which a box with 64 long-polling pull points answers 64 times per event. Most such
requests have one plain shape: the operation's elements, each once, in schema order, each
holding only text. For that shape this reads the values with the schema types' own
``pythonvalue`` (the call zeep makes), so the values and the conversion errors are zeep's.
Any other shape (a missing, repeated, reordered or extra element, attributes, nested
content, comments, stray text) is declined and the caller takes zeep's path: the decoder
never decides what zeep would make of an unusual request.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import types
from collections.abc import Callable
from typing import Any

from lxml import etree
from zeep.xsd.elements.any import Any as AnyParticle
from zeep.xsd.elements.element import Element
from zeep.xsd.elements.indicators import Sequence
from zeep.xsd.types.complex import ComplexType
from zeep.xsd.types.simple import AnySimpleType


@dataclasses.dataclass(frozen=True)
class Decoded:
    """The request value (attributes named as zeep names them) and the conversion errors
    zeep would have logged (each the exception's text)."""

    value: types.SimpleNamespace
    errors: list[str]


#: Distinct texts remembered per field (a pull point repeats ``PT5S`` and its limit).
_CACHED_TEXTS = 64
#: Values that may be shared between requests (a handler cannot change them).
_IMMUTABLE = (
    str,
    int,
    float,
    decimal.Decimal,
    datetime.date,
    datetime.time,
    datetime.timedelta,
)


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    tag: str
    convert: Callable[[str], Any]
    #: text -> value of successful conversions to immutable values.
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)


class FlatDecoder:
    """Reads one operation's request element; :meth:`compile` returns None for a type
    this decoder does not cover."""

    def __init__(self, tag: str, fields: tuple[_Field, ...], wildcards: tuple[str, ...]) -> None:
        self._tag = tag
        self._fields = fields
        self._wildcards = wildcards

    @classmethod
    def compile(cls, element: Element) -> FlatDecoder | None:
        """A decoder for ``element`` if its type is a sequence of single simple-typed
        elements, optionally followed by ``xs:any`` particles, and has no attributes."""
        xsd_type = element.type
        if (
            not isinstance(xsd_type, ComplexType)
            or type(xsd_type).parse_xmlelement is not ComplexType.parse_xmlelement
            or not isinstance(xsd_type._element, Sequence)
        ):
            return None
        if xsd_type.attributes or getattr(xsd_type, "_extension", None) is not None:
            return None
        if getattr(xsd_type, "_restriction", None) is not None:
            return None
        fields: list[_Field] = []
        wildcards: list[str] = []
        for name, particle in xsd_type.elements:
            if isinstance(particle, AnyParticle):
                wildcards.append(name)
                continue
            if wildcards:
                return None  # an element after a wildcard: zeep's matching decides
            if type(particle) is not Element or particle.max_occurs != 1:
                return None
            simple = particle.type
            # Only types that parse as AnySimpleType does (text -> pythonvalue): a union
            # or list type reads its text its own way.
            if (
                not isinstance(simple, AnySimpleType)
                or type(simple).parse_xmlelement is not AnySimpleType.parse_xmlelement
            ):
                return None
            fields.append(_Field(name, str(particle.qname.text), simple.pythonvalue))
        if not fields:
            return None
        return cls(str(element.qname.text), tuple(fields), tuple(wildcards))

    def decode(self, payload: etree._Element) -> Decoded | None:
        """The request's value, or None when it has not the plain shape."""
        if payload.tag != self._tag or payload.attrib or not _blank(payload.text):
            return None
        children = list(payload)
        if len(children) != len(self._fields):
            return None
        values: dict[str, Any] = {}
        errors: list[str] = []
        for child, field in zip(children, self._fields, strict=True):
            if child.tag != field.tag or child.attrib or len(child) or not _blank(child.tail):
                return None
            text = child.text
            if text is None:
                values[field.name] = None  # zeep: an empty element has no value
                continue
            cache = field.cache
            if text in cache:
                values[field.name] = cache[text]
                continue
            try:
                value = field.convert(text)
            except (TypeError, ValueError) as exc:
                # zeep logs the error and yields None; the dispatcher faults on it.
                values[field.name] = None
                errors.append(str(exc))
                continue
            values[field.name] = value
            if isinstance(value, _IMMUTABLE):
                if len(cache) >= _CACHED_TEXTS:
                    cache.clear()
                cache[text] = value
        for name in self._wildcards:
            values[name] = None
        return Decoded(types.SimpleNamespace(**values), errors)


def _blank(text: str | None) -> bool:
    return text is None or not text.strip(" \t\r\n")
