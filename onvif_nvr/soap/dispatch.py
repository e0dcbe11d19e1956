"""WSDL-driven SOAP dispatch: a request body element's QName picks the operation of the
service at that path; zeep's schema types read the request and write the response.

SOAPAction and the ``action`` media-type parameter are ignored (ODTT before 24.06 sent
none, and some WSDLs carry typos). Every operation of a served binding answers: the ones
without a handler fault with ``env:Receiver/ter:ActionNotSupported``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import zeep.exceptions
from lxml import etree

from onvif_nvr.auth.policy import AccessClass, UserLevel, access_class, allowed
from onvif_nvr.errors import NotAuthorized, NvrError
from onvif_nvr.soap import envelope as env
from onvif_nvr.soap.authn import AuthChallenge, Authenticator, Identity
from onvif_nvr.soap.decode import Decoded, FlatDecoder
from onvif_nvr.soap.render import CompiledElement
from onvif_nvr.wsdl.catalog import Binding, Operation

log = logging.getLogger(__name__)

# zeep turns a value it cannot convert (``<Port>eighty</Port>``) into None and only logs the
# error. This filter hands such errors to the request being parsed, which then faults with
# ter:InvalidArgVal instead of acting on a silently missing value.
_conversion_errors: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "soap_conversion_errors", default=None
)


class _ConversionErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        errors = _conversion_errors.get()
        if errors is None:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        errors.append(str(exc) if exc else record.getMessage())
        return False


logging.getLogger("zeep.xsd.types.simple").addFilter(_ConversionErrorFilter())

_UNDERSTOOD_HEADERS = (
    "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}",
    "{http://www.w3.org/2005/08/addressing}",
    "{http://schemas.xmlsoap.org/ws/2004/08/addressing}",
)
_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::[0-9]{1,5})?$")


@dataclasses.dataclass(frozen=True)
class HttpRequest:
    """What the SOAP endpoint needs of an HTTP request (framework-neutral)."""

    method: str
    path: str
    #: Header names in lower case.
    headers: Mapping[str, str]
    body: bytes
    remote: str
    #: ``host:port`` of the local socket, used when the client sent no usable Host.
    local_address: str
    scheme: str = "http"
    #: The request-target as sent (path and query), for Digest's ``uri``.
    target: str = ""


@dataclasses.dataclass
class HttpResponse:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class CallContext:
    """Passed to every handler: who is calling, and how to build addresses they can use."""

    username: str | None
    level: UserLevel
    remote: str
    #: ``scheme://host[:port]`` exactly as the client reached us (XAddrs are built from it).
    base_url: str
    operation: str
    #: The HTTP path the request was dispatched on (a subscription's own address).
    path: str = ""
    #: The request's Body element as received, for ``xs:any`` content whose namespaces
    #: matter (event filters) and that zeep's value does not keep.
    payload: etree._Element | None = None

    def xaddr(self, path: str) -> str:
        return self.base_url + path


class SoapFault(Exception):
    """A fault a handler composes itself: code, ``ter:`` subcodes and a Detail element
    (WS-BaseNotification faults carry their meaning in the Detail)."""

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        subcodes: tuple[str, ...] = (),
        detail: etree._Element | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.subcodes = subcodes
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class RawBody:
    """A handler's answer already serialised: one element, UTF-8, no XML declaration,
    every namespace it uses declared on it. For answers sent many times whose parts are
    shared (a PullMessages answer is mostly notifications rendered once for every pull
    point); the handler is then responsible for its validity against the schema, which
    the tests check."""

    xml: bytes


Handler = Callable[[CallContext, Any], Awaitable[Any]]


@dataclasses.dataclass(frozen=True)
class AccessRecord:
    """One line of the access log."""

    remote: str
    username: str | None
    service: str
    operation: str
    outcome: str


class SoapService:
    """One WSDL binding served at one path (or at every path below a prefix, when its
    ServiceDef says ``path_is_prefix``), with the handlers that implement it.

    With ``addressing``, answers and faults carry WS-Addressing headers (wsa:Action from
    the WSDL, wsa:RelatesTo), as the event service must (Core §9). ``optional`` names
    required request elements a handler accepts absent (per operation): zeep-based clients
    leave out an empty complex element such as the Search service's ``<Scope/>``.

    ``fast_decode`` names operations whose requests are read without zeep's parser when
    they have the plain shape (:mod:`onvif_nvr.soap.decode`); their handlers then get a
    ``SimpleNamespace`` with the same attributes as zeep's value and must read it by
    attribute only."""

    def __init__(
        self,
        binding: Binding,
        handlers: Mapping[str, Handler],
        *,
        addressing: bool = False,
        optional: Mapping[str, Collection[str]] | None = None,
        fast_decode: Collection[str] = (),
    ) -> None:
        unknown = set(handlers) - set(binding.operations)
        if unknown:
            raise ValueError(
                f"handlers for operations not in {binding.service.binding}: {sorted(unknown)}"
            )
        self.binding = binding
        self.definition = binding.service
        self.handlers = dict(handlers)
        self._by_qname = binding.by_qname()
        self._access = {
            name: access_class(binding.service.spec, name) for name in binding.operations
        }
        absent = optional or {}
        self._required = {
            name: tuple(n for n in _required_children(op) if n not in absent.get(name, ()))
            for name, op in binding.operations.items()
        }
        self._renderers: dict[str, CompiledElement] = {}
        self._decoders: dict[str, FlatDecoder] = {}
        for name in fast_decode:
            decoder = FlatDecoder.compile(binding.operations[name].input)
            if decoder is None:
                raise ValueError(f"{name} is not a flat request: it has no fast decoder")
            self._decoders[name] = decoder
        self._templates: dict[tuple[str, str], env.EnvelopeTemplate] = {}
        self.nsmap = {binding.service.prefix: binding.service.namespace}
        self.addressing = addressing

    def operation_for(self, qname: str) -> Operation | None:
        return self._by_qname.get(qname)

    def access_class(self, operation: str) -> AccessClass:
        return self._access[operation]

    def renderer(self, operation: Operation) -> CompiledElement:
        """The operation's response writer, compiled on first use."""
        compiled = self._renderers.get(operation.name)
        if compiled is None:
            compiled = self._renderers[operation.name] = CompiledElement(operation.output)
        return compiled

    def decode(self, operation: str, payload: etree._Element) -> Decoded | None:
        """The request read by the operation's fast decoder, or None: zeep reads it."""
        decoder = self._decoders.get(operation)
        return decoder.decode(payload) if decoder is not None else None

    def template(self, soap_ns: str, operation: Operation) -> env.EnvelopeTemplate:
        """The response envelope around a :class:`RawBody` answer of ``operation``."""
        key = (soap_ns, operation.name)
        template = self._templates.get(key)
        if template is None:
            action = operation.output_action if self.addressing else None
            template = self._templates[key] = env.EnvelopeTemplate(soap_ns, self.nsmap, action)
        return template

    def missing_arguments(self, operation: str, value: Any) -> list[str]:
        """Required top-level request elements that are absent (zeep yields None or [])."""
        return [n for n in self._required[operation] if getattr(value, n, None) in (None, [])]

    def coverage(self) -> dict[str, bool]:
        """Operation name -> implemented, for the coverage report."""
        return {name: name in self.handlers for name in sorted(self.binding.operations)}


class SoapEndpoint:
    """Turns an HTTP request into the SOAP response of the service at its path."""

    def __init__(
        self,
        services: list[SoapService],
        authenticator: Authenticator,
        access_sink: Callable[[AccessRecord], None] | None = None,
    ) -> None:
        # Several bindings may share a path (the event service's); the body QName picks.
        self._exact: dict[str, list[SoapService]] = {}
        self._prefixed: dict[str, list[SoapService]] = {}
        for s in services:
            table = self._prefixed if s.definition.path_is_prefix else self._exact
            table.setdefault(s.definition.path, []).append(s)
        self._all = list(services)
        self._auth = authenticator
        self._access_sink = access_sink

    @property
    def services(self) -> list[SoapService]:
        return list(self._all)

    def services_at(self, path: str) -> list[SoapService]:
        """The bindings served at ``path``: an exact path, or one resource (a single
        non-empty segment) below a prefix path."""
        found = self._exact.get(path)
        if found:
            return found
        for prefix, services in self._prefixed.items():
            rest = path[len(prefix) :]
            if path.startswith(prefix) and rest and "/" not in rest:
                return services
        return []

    def service_at(self, path: str) -> SoapService | None:
        found = self.services_at(path)
        return found[0] if found else None

    async def handle(self, request: HttpRequest) -> HttpResponse:
        candidates = self.services_at(request.path)
        if not candidates:
            return HttpResponse(
                404, b"no SOAP service at this path\n", [("Content-Type", "text/plain")]
            )
        if not request.body.strip() and not request.headers.get("authorization"):
            # Digest clients such as curl probe with an empty body to get the challenge.
            return self._challenge(env.SOAP12, self._auth.missing_credentials())
        try:
            soap = env.parse_request(request.body)
        except env.EnvelopeError as exc:
            return self._fault(exc.soap_ns, exc.code, exc.subcodes, str(exc))
        ns = soap.soap_ns
        not_understood = _not_understood_header(soap)
        if not_understood is not None:
            body = env.serialize(
                env.fault_envelope(
                    ns,
                    "MustUnderstand",
                    (),
                    f"header {not_understood.localname} not understood",
                    not_understood=not_understood,
                )
            )
            return HttpResponse(500, body, [("Content-Type", env.CONTENT_TYPES[ns])])
        path = request.path
        to = env.read_addressing(soap.header) if soap.header is not None else None
        if to is not None and to.to:
            # WS-Addressing: wsa:To names the resource (a subscription) even when the
            # client posts to the service's address; it must be one of ours.
            target = urllib.parse.urlsplit(to.to).path
            if target and target != path and self.services_at(target):
                path, candidates = target, self.services_at(target)
        qname = soap.payload.tag
        service, operation = candidates[0], None
        if isinstance(qname, str):
            for candidate in candidates:
                operation = candidate.operation_for(qname)
                if operation is not None:
                    service = candidate
                    break
        relates_to = to.message_id if to is not None else None

        def fault(soap_ns: str, code: str, subcodes: tuple[str, ...], reason: str) -> HttpResponse:
            return self._fault(
                soap_ns,
                code,
                subcodes,
                reason,
                addressing=service.addressing,
                relates_to=relates_to,
            )

        def error(soap_ns: str, exc: NvrError) -> HttpResponse:
            return fault(soap_ns, exc.side, exc.subcodes, exc.message)

        if operation is None:
            local = etree.QName(soap.payload).localname
            self._record(request, None, service, local, "unknown-operation")
            return fault(
                ns,
                "Receiver",
                ("ActionNotSupported",),
                f"{local} is not an operation of this service",
            )
        name = operation.name
        cls = service.access_class(name)
        identity = Identity(None, UserLevel.ANONYMOUS)
        if cls is not AccessClass.PRE_AUTH:
            try:
                identity = self._auth.authenticate(request, soap)
            except AuthChallenge as challenge:
                self._record(request, challenge.username, service, name, challenge.reason)
                return self._challenge(ns, challenge)
            if not allowed(identity.level, cls):
                self._record(request, identity.username, service, name, "forbidden")
                return error(ns, NotAuthorized(f"{identity.level.value} users may not call {name}"))
        handler = service.handlers.get(name)
        if handler is None:
            self._record(request, identity.username, service, name, "not-implemented")
            return fault(ns, "Receiver", ("ActionNotSupported",), f"{name} is not implemented")
        decoded = service.decode(name, soap.payload)
        if decoded is not None:
            value, errors = decoded.value, decoded.errors
        else:
            errors = []
            token = _conversion_errors.set(errors)
            try:
                value = operation.input.parse(soap.payload, service.binding.schema)
            except (zeep.exceptions.XMLParseError, zeep.exceptions.UnexpectedElementError) as exc:
                self._record(request, identity.username, service, name, "invalid-args")
                return fault(ns, "Sender", ("InvalidArgs",), f"{name}: {exc}")
            except (ValueError, TypeError, ArithmeticError) as exc:
                self._record(request, identity.username, service, name, "invalid-arg-val")
                return fault(ns, "Sender", ("InvalidArgVal",), f"{name}: invalid value: {exc}")
            finally:
                _conversion_errors.reset(token)
        if errors:
            self._record(request, identity.username, service, name, "invalid-arg-val")
            return fault(ns, "Sender", ("InvalidArgVal",), f"{name}: invalid value: {errors[0]}")
        missing = service.missing_arguments(name, value)
        if missing:
            self._record(request, identity.username, service, name, "invalid-args")
            return fault(ns, "Sender", ("InvalidArgs",), f"{name}: missing {', '.join(missing)}")
        ctx = CallContext(
            username=identity.username,
            level=identity.level,
            remote=request.remote,
            base_url=f"{request.scheme}://{_host(request)}",
            operation=name,
            path=path,
            payload=soap.payload,
        )
        try:
            result = await handler(ctx, value)
        except SoapFault as raised:
            self._record(request, identity.username, service, name, "fault:" + _fault_name(raised))
            return self._fault(
                ns,
                raised.code,
                raised.subcodes,
                raised.reason,
                detail=raised.detail,
                addressing=service.addressing,
                relates_to=relates_to,
            )
        except NvrError as exc:
            self._record(request, identity.username, service, name, "fault:" + exc.subcodes[-1])
            return self._fault(
                ns,
                exc.side,
                exc.subcodes,
                exc.message,
                addressing=service.addressing,
                relates_to=relates_to,
            )
        except Exception:
            log.exception("handler for %s failed", name)
            self._record(request, identity.username, service, name, "error")
            return fault(ns, "Receiver", ("Action",), f"{name} failed inside the device")
        if isinstance(result, RawBody):
            self._record(request, identity.username, service, name, "ok")
            data = service.template(ns, operation).wrap(result.xml, relates_to)
            return HttpResponse(200, data, [("Content-Type", env.CONTENT_TYPES[ns])])
        envelope, body = env.new_envelope(ns, service.nsmap)
        if isinstance(result, etree._Element):
            # A handler may build its answer itself (content the schema types xs:any).
            body.append(result)
        else:
            try:
                service.renderer(operation).render(body, result if result is not None else {})
            except (zeep.exceptions.ValidationError, TypeError, ValueError, AttributeError):
                log.exception("response of %s does not fit the schema", name)
                self._record(request, identity.username, service, name, "error")
                return fault(ns, "Receiver", ("Action",), f"{name} produced an invalid response")
        if service.addressing and operation.output_action:
            env.add_addressing(envelope, operation.output_action, relates_to)
        self._record(request, identity.username, service, name, "ok")
        return HttpResponse(200, env.serialize(envelope), [("Content-Type", env.CONTENT_TYPES[ns])])

    @staticmethod
    def _challenge(soap_ns: str, challenge: AuthChallenge) -> HttpResponse:
        body = env.serialize(
            env.fault_envelope(soap_ns, "Sender", ("NotAuthorized",), challenge.message)
        )
        headers = [("Content-Type", env.CONTENT_TYPES[soap_ns])]
        headers += [("WWW-Authenticate", value) for value in challenge.www_authenticate]
        if challenge.retry_after_s:
            headers.append(("Retry-After", str(challenge.retry_after_s)))
        return HttpResponse(challenge.status, body, headers)

    @staticmethod
    def _fault(
        soap_ns: str,
        code: str,
        subcodes: tuple[str, ...],
        reason: str,
        *,
        detail: etree._Element | None = None,
        addressing: bool = False,
        relates_to: str | None = None,
    ) -> HttpResponse:
        envelope = env.fault_envelope(soap_ns, code, subcodes, reason, detail)
        if addressing:
            env.add_addressing(envelope, env.WSA_FAULT_ACTION, relates_to)
        body = env.serialize(envelope)
        return HttpResponse(
            env.fault_status(soap_ns, code), body, [("Content-Type", env.CONTENT_TYPES[soap_ns])]
        )

    def _record(
        self,
        request: HttpRequest,
        username: str | None,
        service: SoapService,
        op: str,
        outcome: str,
    ) -> None:
        if self._access_sink is not None:
            self._access_sink(
                AccessRecord(request.remote, username, service.definition.key, op, outcome)
            )


def _fault_name(fault: SoapFault) -> str:
    if fault.detail is not None:
        return str(etree.QName(fault.detail).localname)
    return fault.subcodes[-1] if fault.subcodes else fault.code


def _required_children(operation: Operation) -> tuple[str, ...]:
    elements = getattr(operation.input.type, "elements", None) or []
    return tuple(name for name, element in elements if getattr(element, "min_occurs", 0) >= 1)


def _host(request: HttpRequest) -> str:
    """The authority the client used, if it is a plain host[:port]; else our own address."""
    host = request.headers.get("host", "")
    if host and len(host) <= 255 and _HOST_RE.match(host):
        return host
    return request.local_address


def _not_understood_header(soap: env.Request) -> etree.QName | None:
    if soap.header is None:
        return None
    must = f"{{{soap.soap_ns}}}mustUnderstand"
    for child in soap.header:
        if not isinstance(child.tag, str):
            continue
        if child.get(must) in ("1", "true") and not child.tag.startswith(_UNDERSTOOD_HEADERS):
            return etree.QName(child)
    return None
