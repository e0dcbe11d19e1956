"""The Search service's XPath dialect (RecordingSearch "Xpath dialect",
``http://www.onvif.org/ver10/tse/searchFilter``), sans-IO: parse once, evaluate on a small
element tree (a RecordingInformation for a scope's RecordingInformationFilter).

The grammar is the specification's, nothing more::

    Expression  ::= BoolExpr | Expression 'and' Expression | Expression 'or' Expression
                  | '(' Expression ')' | 'not' '(' Expression ')'
    BoolExpr    ::= 'boolean' '(' PathExpr ')' | 'contains' '(' ElementPath ',' '"' String '"' ')'
    PathExpr    ::= '//SimpleItem' '[' AttrExpr ']' | '//ElementItem' '[' AttrExpr ']' | ElementTest
    AttrExpr    ::= ('@Name' '=' | '@Value' Operator) '"' String '"'
                  | AttrExpr 'and' AttrExpr | AttrExpr 'or' AttrExpr | 'not' '(' AttrExpr ')'
    ElementTest ::= '/' ElementPath '[' NodeComp ']'          e.g. //Track[TrackType = "Video"]
    ElementPath ::= ('/' Name)+
    NodeComp    ::= ('@' Name | Name) Operator '"' String '"'
    Operator    ::= '=' | '!=' | '<' | '<=' | '>' | '>='

``and`` binds tighter than ``or`` (XPath's precedence). Lenient where clients differ from the
letter of the text, never beyond the grammar: strings in ``"``, ``'`` or the typographic
quotes of the specification's own examples; a namespace prefix on a name (``tt:Track``) is
ignored; ``contains`` takes ``//A/B`` as well as ``/A/B``. Relational operators compare as
numbers when both sides are numbers and as strings otherwise (XPath 1.0 would make a
dateTime comparison false; ISO 8601 UTC strings order correctly as strings). Anything else
raises :class:`SearchFilterError` (``ter:InvalidArgVal`` at the SOAP edge).
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

DIALECT = "http://www.onvif.org/ver10/tse/searchFilter"
MAX_EXPRESSION_CHARS = 4096
MAX_DEPTH = 32
OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u201d": "\u201d"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*(?::[A-Za-z_][A-Za-z0-9_.\-]*)?")
_SYMBOLS = ("!=", "<=", ">=", "//", "=", "<", ">", "/", "(", ")", "[", "]", ",", "@")


class SearchFilterError(ValueError):
    """An expression outside the dialect; the message says where."""


@dataclasses.dataclass(frozen=True)
class Node:
    """An element: its name, text (leaves), attributes and child elements."""

    name: str
    text: str = ""
    children: tuple[Node, ...] = ()
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def string_value(self) -> str:
        """XPath's string-value: the text of the element and all its descendants."""
        return self.text + "".join(c.string_value() for c in self.children)

    def descendants_or_self(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.descendants_or_self()


Predicate = Callable[[Node], bool]
#: A compiled expression: true or false for a document (its root element).
Expression = Callable[[Node], bool]


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str  # "string", "name" or the symbol itself
    text: str
    at: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _QUOTES:
            end = text.find(_QUOTES[ch], i + 1)
            if end < 0:
                raise SearchFilterError(f"unterminated string at {i}")
            tokens.append(_Token("string", text[i + 1 : end], i))
            i = end + 1
            continue
        symbol = next((s for s in _SYMBOLS if text.startswith(s, i)), None)
        if symbol is not None:
            tokens.append(_Token(symbol, symbol, i))
            i += len(symbol)
            continue
        match = _NAME.match(text, i)
        if match is None:
            raise SearchFilterError(f"unexpected {ch!r} at {i}")
        tokens.append(_Token("name", match.group(), i))
        i = match.end()
    return tokens


def _local(name: str) -> str:
    return name.rsplit(":", 1)[-1]


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value == value else None  # NaN is no number to compare


def compare(left: str, op: str, right: str) -> bool:
    """One comparison of the dialect (see the module's notes on relational operators)."""
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return _ORDER[op](a, b)
    return _ORDER[op](left, right)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def fail(self, message: str) -> SearchFilterError:
        token = self.tokens[self.pos] if self.pos < len(self.tokens) else None
        where = f"at {token.at}" if token else "at the end"
        return SearchFilterError(f"{message} {where}")

    def peek(self, ahead: int = 0) -> _Token | None:
        i = self.pos + ahead
        return self.tokens[i] if i < len(self.tokens) else None

    def is_name(self, word: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token is not None and token.kind == "name" and token.text == word

    def take(self, kind: str, what: str | None = None) -> _Token:
        token = self.peek()
        if token is None or token.kind != kind:
            raise self.fail(f"expected {what or repr(kind)}")
        self.pos += 1
        return token

    def keyword(self, word: str) -> None:
        if not self.is_name(word):
            raise self.fail(f"expected {word!r}")
        self.pos += 1

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail("expression nested too deeply")

    # Expression ---------------------------------------------------------------------------
    def expression(self) -> Expression:
        parts = [self.conjunction()]
        while self.is_name("or"):
            self.pos += 1
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        return lambda doc: any(p(doc) for p in parts)

    def conjunction(self) -> Expression:
        parts = [self.unary()]
        while self.is_name("and"):
            self.pos += 1
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda doc: all(p(doc) for p in parts)

    def unary(self) -> Expression:
        self.nest()
        try:
            token = self.peek()
            if token is not None and token.kind == "(":
                self.pos += 1
                inner = self.expression()
                self.take(")", "')'")
                return inner
            if self.is_name("not") and self._call_follows():
                self.pos += 2
                negated = self.expression()
                self.take(")", "')'")
                return lambda doc: not negated(doc)
            if self.is_name("boolean") and self._call_follows():
                self.pos += 2
                test = self.path_expression()
                self.take(")", "')'")
                return test
            if self.is_name("contains") and self._call_follows():
                self.pos += 2
                return self.contains()
            raise self.fail("expected boolean(...), contains(...), not(...) or '('")
        finally:
            self.depth -= 1

    def _call_follows(self) -> bool:
        token = self.peek(1)
        return token is not None and token.kind == "("

    def contains(self) -> Expression:
        descendant = self._path_start()
        steps = self.element_path()
        self.take(",", "','")
        needle = self.take("string", "a quoted string").text
        self.take(")", "')'")

        def test(doc: Node) -> bool:
            found = _select(doc, descendant, steps)
            # XPath's contains(node-set, s): the string-value of the first node.
            return needle in (found[0].string_value() if found else "")

        return test

    def _path_start(self) -> bool:
        token = self.peek()
        if token is not None and token.kind == "//":
            self.pos += 1
            return True
        if token is not None and token.kind == "/":
            self.pos += 1
            return False
        raise self.fail("expected a path starting with '/' or '//'")

    def element_path(self) -> tuple[str, ...]:
        steps = [_local(self.take("name", "an element name").text)]
        while (token := self.peek()) is not None and token.kind == "/":
            self.pos += 1
            steps.append(_local(self.take("name", "an element name").text))
        return tuple(steps)

    # PathExpr -----------------------------------------------------------------------------
    def path_expression(self) -> Expression:
        token = self.peek()
        if token is None or token.kind != "//":
            raise self.fail("expected '//' (a path from any element)")
        self.pos += 1
        steps = self.element_path()
        self.take("[", "'['")
        if steps in (("SimpleItem",), ("ElementItem",)):
            predicate = self.attr_expression()
        else:
            predicate = self.node_comparison()
        self.take("]", "']'")
        return lambda doc: any(predicate(n) for n in _select(doc, True, steps))

    def attr_expression(self) -> Predicate:
        parts = [self.attr_conjunction()]
        while self.is_name("or"):
            self.pos += 1
            parts.append(self.attr_conjunction())
        if len(parts) == 1:
            return parts[0]
        return lambda node: any(p(node) for p in parts)

    def attr_conjunction(self) -> Predicate:
        parts = [self.attr_unary()]
        while self.is_name("and"):
            self.pos += 1
            parts.append(self.attr_unary())
        if len(parts) == 1:
            return parts[0]
        return lambda node: all(p(node) for p in parts)

    def attr_unary(self) -> Predicate:
        self.nest()
        try:
            if self.is_name("not") and self._call_follows():
                self.pos += 2
                negated = self.attr_expression()
                self.take(")", "')'")
                return lambda node: not negated(node)
            self.take("@", "'@Name' or '@Value'")
            name = self.take("name", "'Name' or 'Value'")
            attribute = name.text
            if attribute == "Name":
                self.take("=", "'=' (a name is compared for equality only)")
                op = "="
            elif attribute == "Value":
                op = self.operator()
            else:
                raise SearchFilterError(
                    f"an item has @Name and @Value, not @{attribute} at {name.at}"
                )
            value = self.take("string", "a quoted string").text
            return _attribute_test(attribute, op, value)
        finally:
            self.depth -= 1

    def node_comparison(self) -> Predicate:
        token = self.peek()
        if token is not None and token.kind == "@":
            self.pos += 1
            attribute = _local(self.take("name", "an attribute name").text)
            op = self.operator()
            value = self.take("string", "a quoted string").text
            return _attribute_test(attribute, op, value)
        child = _local(self.take("name", "a child element or @attribute").text)
        op = self.operator()
        value = self.take("string", "a quoted string").text

        def test(node: Node) -> bool:
            return any(
                compare(c.string_value(), op, value) for c in node.children if c.name == child
            )

        return test

    def operator(self) -> str:
        token = self.peek()
        if token is None or token.kind not in OPERATORS:
            raise self.fail("expected one of = != < <= > >=")
        self.pos += 1
        return token.kind


def _attribute_test(attribute: str, op: str, value: str) -> Predicate:
    def test(node: Node) -> bool:
        found = node.attributes.get(attribute)
        return found is not None and compare(found, op, value)

    return test


def _select(doc: Node, descendant: bool, steps: tuple[str, ...]) -> list[Node]:
    """``//A/B/C`` (any A) or ``/A/B/C`` (A the root element), in document order."""
    if descendant:
        current = [n for n in doc.descendants_or_self() if n.name == steps[0]]
    else:
        current = [doc] if doc.name == steps[0] else []
    for step in steps[1:]:
        current = [c for n in current for c in n.children if c.name == step]
    return current


def parse(text: str) -> Expression:
    """Compile an expression of the dialect; raise SearchFilterError for anything else."""
    text = (text or "").strip()
    if not text:
        raise SearchFilterError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise SearchFilterError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    parser = _Parser(text)
    expression = parser.expression()
    if parser.peek() is not None:
        raise parser.fail(f"unexpected {parser.peek().text!r}")  # type: ignore[union-attr]
    return expression
