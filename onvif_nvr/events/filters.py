"""Subscription filters, sans-IO: topic expressions and the ONVIF message content filter.

Topic expressions (Core §9.6.3): the WS-Topics ``Concrete`` dialect (one topic path) and
ONVIF's ``ConcreteSet`` (``|`` between paths, a trailing ``//.`` for a whole sub-tree).
``*`` in place of a child name matches any one level (a lenient extension some clients
rely on; it is never needed with ConcreteSet's ``//.``). Prefixes resolve through the
namespaces in scope at the ``TopicExpression`` element.

Message content (Core §9.4.4, ``ItemFilter`` dialect): a boolean expression over the
Source/Key/Data items, a strict subset of XPath 1.0::

    boolean(//tt:SimpleItem[@Name="Token" and @Value="volume1"]) and not(boolean(...))

Anything outside the grammar raises :class:`FilterError` with the WS-BaseNotification
fault that names the problem.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from onvif_nvr.events.message import ElementItem, Item, Message, SimpleItem
from onvif_nvr.events.topics import Topic, TopicCatalog

CONCRETE = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Concrete"
CONCRETE_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
ITEM_FILTER = "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter"
TOPIC_DIALECTS = (CONCRETE, CONCRETE_SET)
CONTENT_DIALECTS = (ITEM_FILTER,)
TT = "http://www.onvif.org/ver10/schema"

MAX_EXPRESSION_CHARS = 4096
MAX_DEPTH = 32


#: WS-BaseNotification (the ``wsnt:Filter`` components).
WSNT = "http://docs.oasis-open.org/wsn/b-2"


class FilterError(ValueError):
    """A filter the box cannot accept; ``fault`` is the wsnt fault element's local name.
    From :func:`parse_filter_element`: ``component`` is the local name of the filter child
    at fault, and ``unknown`` that child when it is no filter the box knows."""

    def __init__(self, fault: str, message: str, *, unknown: Any = None) -> None:
        super().__init__(message)
        self.fault = fault
        self.component = ""
        self.unknown = unknown


# -- topic expressions ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TopicPath:
    namespace: str
    #: Child names below the root; ``"*"`` matches any one level.
    path: tuple[str, ...]
    subtree: bool

    def matches(self, topic: Topic) -> bool:
        if topic.namespace != self.namespace:
            return False
        if len(topic.path) < len(self.path) or (
            not self.subtree and len(topic.path) != len(self.path)
        ):
            return False
        return all(p == "*" or p == t for p, t in zip(self.path, topic.path, strict=False))


@dataclasses.dataclass(frozen=True)
class TopicFilter:
    alternatives: tuple[TopicPath, ...]

    def matches(self, topic: Topic) -> bool:
        return any(p.matches(topic) for p in self.alternatives)


_NCNAME = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_STEP = re.compile(rf"^(?:(?P<prefix>{_NCNAME}):)?(?P<name>{_NCNAME}|\*)$")


def parse_topic_expression(
    text: str, dialect: str, nsmap: Mapping[str | None, str], catalog: TopicCatalog | None = None
) -> TopicFilter:
    """Parse a TopicExpression; with ``catalog``, one that names no topic of the box
    raises TopicNotSupportedFault."""
    if dialect not in TOPIC_DIALECTS:
        raise FilterError(
            "TopicExpressionDialectUnknownFault", f"topic expression dialect {dialect!r}"
        )
    text = (text or "").strip()
    if not text:
        raise FilterError("InvalidTopicExpressionFault", "empty topic expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise FilterError("InvalidTopicExpressionFault", "topic expression too long")
    parts = text.split("|")
    if dialect == CONCRETE and len(parts) > 1:
        raise FilterError("InvalidTopicExpressionFault", "'|' is not Concrete dialect")
    alternatives = tuple(_topic_path(part.strip(), dialect, nsmap) for part in parts)
    result = TopicFilter(alternatives)
    if catalog is not None and not any(result.matches(d.topic) for d in catalog):
        raise FilterError("TopicNotSupportedFault", f"no topic of this device matches {text!r}")
    return result


def _topic_path(text: str, dialect: str, nsmap: Mapping[str | None, str]) -> TopicPath:
    subtree = text.endswith("//.")
    if subtree:
        if dialect == CONCRETE:
            raise FilterError("InvalidTopicExpressionFault", "'//.' is not Concrete dialect")
        text = text[:-3]
    if not text:
        raise FilterError("InvalidTopicExpressionFault", "a topic path is empty")
    steps = text.split("/")
    namespace = ""
    path: list[str] = []
    for i, step in enumerate(steps):
        match = _STEP.match(step)
        if match is None:
            raise FilterError("InvalidTopicExpressionFault", f"invalid topic step {step!r}")
        prefix, name = match.group("prefix"), match.group("name")
        if name == "*" and (i == 0 or dialect == CONCRETE):
            raise FilterError("InvalidTopicExpressionFault", f"'*' not allowed in {text!r}")
        if i == 0:
            # RootTopic ::= QName: a prefix bound in scope (or the default namespace).
            resolved = nsmap.get(prefix) if prefix else nsmap.get(None)
            if not resolved:
                raise FilterError(
                    "InvalidTopicExpressionFault", f"prefix {prefix!r} of {step!r} is not bound"
                )
            namespace = resolved
        elif prefix and prefix not in nsmap:
            raise FilterError("InvalidTopicExpressionFault", f"prefix {prefix!r} is not bound")
        path.append(name)
    return TopicPath(namespace, tuple(path), subtree)


# -- message content: the ItemFilter dialect -------------------------------------------------
T = TypeVar("T")
ContentTest = Callable[[Message], bool]
ItemTest = Callable[[Item], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"[^"]*"|'[^']*')
      | (?P<punct>//|\(|\)|\[|\]|=|:)
      | (?P<attr>@[A-Za-z_][A-Za-z0-9_]*)
      | (?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FilterError(
                "InvalidMessageContentExpressionFault",
                f"unexpected character {text[pos:].lstrip()[:1]!r} at {pos}",
            )
        tokens.append(match.group(match.lastgroup or "name"))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, nsmap: Mapping[str | None, str]) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.nsmap = nsmap
        self.depth = 0

    def fail(self, message: str) -> FilterError:
        return FilterError("InvalidMessageContentExpressionFault", message)

    def peek(self, ahead: int = 0) -> str | None:
        i = self.pos + ahead
        return self.tokens[i] if i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None:
            raise self.fail(
                f"expression ends early{f', expected {expected!r}' if expected else ''}"
            )
        if expected is not None and token != expected:
            raise self.fail(f"expected {expected!r}, found {token!r}")
        self.pos += 1
        return token

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail("expression nested too deeply")

    # Expression ::= BoolExpr | Expression 'and' Expression | Expression 'or' Expression
    #              | '(' Expression ')' | 'not' '(' Expression ')'   ('and' binds tighter)
    # AttrExpr is the same grammar over attribute comparisons: one parser, two leaves.
    def boolean(self, leaf: Callable[[], Callable[[T], bool]]) -> Callable[[T], bool]:
        terms = [self._conjunction(leaf)]
        while self.peek() == "or":
            self.take()
            terms.append(self._conjunction(leaf))
        if len(terms) == 1:
            return terms[0]
        return lambda x: any(t(x) for t in terms)

    def _conjunction(self, leaf: Callable[[], Callable[[T], bool]]) -> Callable[[T], bool]:
        terms = [self._unary(leaf)]
        while self.peek() == "and":
            self.take()
            terms.append(self._unary(leaf))
        if len(terms) == 1:
            return terms[0]
        return lambda x: all(t(x) for t in terms)

    def _unary(self, leaf: Callable[[], Callable[[T], bool]]) -> Callable[[T], bool]:
        self.nest()
        try:
            token = self.peek()
            if token == "not":
                self.take()
                self.take("(")
                inner = self.boolean(leaf)
                self.take(")")
                return lambda x: not inner(x)
            if token == "(":
                self.take()
                inner = self.boolean(leaf)
                self.take(")")
                return inner
            return leaf()
        finally:
            self.depth -= 1

    def expression(self) -> ContentTest:
        return self.boolean(self._bool_expr)

    def _bool_expr(self) -> ContentTest:
        token = self.peek()
        if token == "boolean":
            self.take()
            self.take("(")
            path = self.path_expression()
            self.take(")")
            return path
        raise self.fail(f"expected boolean(, not( or (, found {token!r}")

    # PathExpr ::= '//' Prefix? ('SimpleItem' | 'ElementItem') '[' AttrExpr ']'
    def path_expression(self) -> ContentTest:
        if self.peek() == "(":  # boolean((//tt:SimpleItem[...])) is common and valid XPath
            self.nest()
            self.take()
            inner = self.path_expression()
            self.take(")")
            self.depth -= 1
            return inner
        self.take("//")
        name = self.take()
        if self.peek() == ":":
            self.take()
            namespace = self.nsmap.get(name)
            if namespace is None:
                raise self.fail(f"prefix {name!r} is not bound")
            if namespace != TT:
                raise self.fail(f"prefix {name!r} is not the ONVIF schema namespace")
            name = self.take()
        kind: type[SimpleItem] | type[ElementItem]
        if name == "SimpleItem":
            kind = SimpleItem
        elif name == "ElementItem":
            kind = ElementItem
        else:
            raise self.fail(f"expected SimpleItem or ElementItem, found {name!r}")
        test: ItemTest = _always
        if self.peek() == "[":
            self.take()
            test = self.attr_expression()
            self.take("]")
        return lambda m: any(isinstance(i, kind) and test(i) for i in m.items())

    def attr_expression(self) -> ItemTest:
        return self.boolean(self._attr_comparison)

    # AttrComp ::= ('@Name' | '@Value') '=' Literal
    def _attr_comparison(self) -> ItemTest:
        attribute = self.take()
        if attribute not in ("@Name", "@Value"):
            raise self.fail(f"expected @Name or @Value, found {attribute!r}")
        self.take("=")
        literal = self.take()
        if len(literal) < 2 or literal[0] not in "\"'" or literal[-1] != literal[0]:
            raise self.fail(f"expected a quoted string, found {literal!r}")
        value = literal[1:-1]
        if attribute == "@Name":
            return lambda i: i.name == value
        # An ElementItem has no Value attribute: the comparison is false.
        return lambda i: isinstance(i, SimpleItem) and i.value == value


def _always(item: Item) -> bool:
    return True


def parse_item_filter(text: str, dialect: str, nsmap: Mapping[str | None, str]) -> ContentTest:
    """Compile a MessageContent expression of the ItemFilter dialect."""
    if dialect not in CONTENT_DIALECTS:
        raise FilterError("InvalidFilterFault", f"message content dialect {dialect!r}")
    text = (text or "").strip()
    if not text:
        raise FilterError("InvalidMessageContentExpressionFault", "empty message content filter")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise FilterError("InvalidMessageContentExpressionFault", "message content filter too long")
    parser = _Parser(text, nsmap)
    test = parser.expression()
    if parser.peek() is not None:
        raise parser.fail(f"unexpected {parser.peek()!r} after the expression")
    return test


# -- a subscription's filter -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EventFilter:
    """All components must match (WS-BaseNotification: filter components are conjunctive)."""

    topics: tuple[TopicFilter, ...] = ()
    contents: tuple[ContentTest, ...] = ()

    def matches_topic(self, topic: Topic) -> bool:
        return all(t.matches(topic) for t in self.topics)

    def matches(self, message: Message) -> bool:
        return self.matches_topic(message.topic) and all(c(message) for c in self.contents)


def combine(topics: Sequence[TopicFilter], contents: Sequence[ContentTest]) -> EventFilter:
    return EventFilter(tuple(topics), tuple(contents))


def parse_filter_element(element: Any, catalog: TopicCatalog | None = None) -> EventFilter:
    """A ``wsnt:FilterType`` element (lxml): its TopicExpression and MessageContent children
    (prefixes bound where they stand). With ``catalog``, a topic expression naming no topic
    of the box is refused; without, it matches nothing. Raises :class:`FilterError`."""
    topics: list[TopicFilter] = []
    contents: list[ContentTest] = []
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        namespace, _, local = (
            child.tag[1:].rpartition("}") if child.tag[0] == "{" else ("", "", child.tag)
        )
        dialect = child.get("Dialect") or ""
        try:
            if namespace == WSNT and local == "TopicExpression":
                topics.append(
                    parse_topic_expression(child.text or "", dialect, child.nsmap, catalog)
                )
            elif namespace == WSNT and local == "MessageContent":
                contents.append(parse_item_filter(child.text or "", dialect, child.nsmap))
            else:
                raise FilterError("InvalidFilterFault", f"unknown filter {local}", unknown=child)
        except FilterError as exc:
            exc.component = local
            raise
    return combine(topics, contents)
