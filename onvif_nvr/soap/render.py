"""Schema-driven response rendering, compiled once per response element.

zeep's ``Element.render`` walks its type objects and validates on every call, about 20 µs
an element: most of a SOAP request's cost. This compiles the same zeep types into plain
closures (tag, child order, occurrence rules, value conversion with the type's own
``xmlvalue``) for the common shape, a sequence of elements plus attributes. Any other shape
(choices, groups, wildcards with a value, lists, simple content) is handed to zeep for that
subtree, so the output is always what zeep would write; the test suite validates every
response against the XSD.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lxml import etree
from zeep.xsd.elements.any import Any as AnyParticle
from zeep.xsd.elements.any import AnyAttribute
from zeep.xsd.elements.attribute import Attribute
from zeep.xsd.elements.element import Element
from zeep.xsd.elements.indicators import Sequence
from zeep.xsd.types.complex import ComplexType
from zeep.xsd.types.simple import AnySimpleType

TypeRenderer = Callable[[etree._Element, Any], None]
ElementRenderer = Callable[[etree._Element, Any], None]

_SubElement = etree.SubElement


class RenderError(ValueError):
    """The value does not fit the schema (a handler bug)."""


def _getter(value: Any) -> Callable[[str], Any]:
    if isinstance(value, dict):
        return value.get
    return lambda name: getattr(value, name, None)


class CompiledElement:
    """Renders values of one global element (an operation's response)."""

    def __init__(self, element: Element) -> None:
        self._types: dict[int, TypeRenderer | None] = {}
        self._render = self._element(element)

    def render(self, parent: etree._Element, value: Any) -> None:
        self._render(parent, value)

    # -- compilation -----------------------------------------------------------------------
    def _element(self, element: Element) -> ElementRenderer:
        type_renderer = self._type(element.type)
        if type_renderer is None:
            return lambda parent, value: element.render(parent, value)
        tag = element.qname.text if hasattr(element.qname, "text") else str(element.qname)
        many = element.max_occurs == "unbounded" or (
            isinstance(element.max_occurs, int) and element.max_occurs > 1
        )
        if many:

            def render_many(parent: etree._Element, value: Any) -> None:
                for item in value if isinstance(value, list | tuple) else [value]:
                    if item is not None:
                        type_renderer(_SubElement(parent, tag), item)

            return render_many

        def render_one(parent: etree._Element, value: Any) -> None:
            type_renderer(_SubElement(parent, tag), value)

        return render_one

    def _type(self, xsd_type: Any) -> TypeRenderer | None:
        key = id(xsd_type)
        if key in self._types:
            cached = self._types[key]
            if cached is not None:
                return cached
            # A recursive type being compiled: resolve the closure when it is called.
            return lambda node, value: self._types[key](node, value)  # type: ignore[misc]
        self._types[key] = None
        compiled = self._compile_type(xsd_type)
        self._types[key] = compiled
        return compiled

    def _compile_type(self, xsd_type: Any) -> TypeRenderer | None:
        if isinstance(xsd_type, AnySimpleType) and type(xsd_type).__name__ != "ListType":
            convert = xsd_type.xmlvalue

            def render_simple(node: etree._Element, value: Any) -> None:
                node.text = convert(value)

            return render_simple
        if not isinstance(xsd_type, ComplexType):
            return None
        particles = xsd_type._element
        if particles is not None and not isinstance(particles, Sequence):
            return None
        if (
            getattr(xsd_type, "_extension", None) is not None
            or getattr(xsd_type, "_restriction", None) is not None
        ):
            return None
        children: list[tuple[str, ElementRenderer, bool, bool]] = []
        wildcard_names: list[str] = []
        for name, particle in xsd_type.elements if particles is not None else []:
            if isinstance(particle, Element) and type(particle) is Element:
                required = particle.min_occurs >= 1 and not particle.nillable
                many = particle.max_occurs == "unbounded" or (
                    isinstance(particle.max_occurs, int) and particle.max_occurs > 1
                )
                children.append((name, self._element(particle), required, many))
            elif isinstance(particle, AnyParticle):
                wildcard_names.append(name)
            else:
                return None
        attributes: list[tuple[str, str, Callable[[Any], str], bool]] = []
        for name, attribute in xsd_type.attributes:
            if isinstance(attribute, AnyAttribute):
                wildcard_names.append(name)
            elif type(attribute) is Attribute and isinstance(attribute.type, AnySimpleType):
                qname = (
                    attribute.qname.text
                    if hasattr(attribute.qname, "text")
                    else str(attribute.qname)
                )
                attributes.append((name, qname, attribute.type.xmlvalue, bool(attribute.required)))
            else:
                return None
        known = frozenset([c[0] for c in children] + [a[0] for a in attributes] + wildcard_names)
        type_name = getattr(xsd_type, "name", None) or "value"

        def render_complex(node: etree._Element, value: Any) -> None:
            get = _getter(value)
            if isinstance(value, dict):
                unknown = value.keys() - known
                if unknown:
                    raise RenderError(f"{type_name} has no {', '.join(sorted(unknown))}")
            for name in wildcard_names:
                item = get(name)
                # ``is None``: an lxml element with attributes only is falsy (no children).
                if item is not None and not (isinstance(item, dict | list | tuple) and not item):
                    # Wildcard content: zeep writes this subtree (it takes its own value type).
                    xsd_type.render(node, xsd_type(**value) if isinstance(value, dict) else value)
                    return
            for name, qname, convert, required in attributes:
                item = get(name)
                if item is None:
                    if required:
                        raise RenderError(f"{type_name} needs attribute {name}")
                    continue
                node.set(qname, convert(item))
            for name, render_child, required, many in children:
                item = get(name)
                if item is None or (many and isinstance(item, list | tuple) and not item):
                    if required:
                        raise RenderError(f"{type_name} needs {name}")
                    continue
                render_child(node, item)

        return render_complex
