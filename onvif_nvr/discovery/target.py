"""The WS-Discovery target service: announces this box and answers probes (Core §7).

One UDP socket per address family on port 3702, joined to the discovery group
(239.255.255.250, FF02::C) on each chosen interface. ``IP_PKTINFO`` tells, for every
datagram, the interface it came in on and whether it was multicast, so the service can
ignore interfaces it was not given, delay multicast answers by 0-500 ms (APP_MAX_DELAY)
and answer unicast probes at once, and put the receiving interface's address first in
XAddrs. Sends and receives never block: replies are one ``sendto`` on a non-blocking socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence

from onvif_nvr.discovery import messages as m
from onvif_nvr.system.hostinfo import InterfaceInfo

log = logging.getLogger(__name__)

GROUP_V4 = "239.255.255.250"
GROUP_V6 = "ff02::c"
APP_MAX_DELAY_S = 0.5
#: SOAP-over-UDP: multicast messages are sent this many times in all (same MessageID).
MULTICAST_REPEAT = 2
MAX_PENDING_REPLIES = 256
# Linux values; Python 3.11's socket module does not export IP_PKTINFO.
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)


@dataclasses.dataclass(frozen=True)
class LocalAddress:
    interface: str
    index: int
    address: str
    family: int


@dataclasses.dataclass
class TargetState:
    """What the target announces; the composition root keeps it current."""

    endpoint_address: str
    scopes: tuple[str, ...]
    discoverable: bool
    metadata_version: int
    instance_id: int


Announce = Callable[[], Awaitable[None]]


def mreq_v4(address: LocalAddress) -> bytes:
    """struct ip_mreqn for the discovery group on ``address``'s interface."""
    return struct.pack(
        "4s4si", socket.inet_aton(GROUP_V4), socket.inet_aton(address.address), address.index
    )


def _mreq_v6(index: int) -> bytes:
    return socket.inet_pton(socket.AF_INET6, GROUP_V6) + struct.pack("@I", index)


def local_addresses(
    interfaces: Sequence[InterfaceInfo], wanted: Sequence[str], bind: str
) -> list[LocalAddress]:
    """The addresses discovery works on: up interfaces with multicast-usable addresses,
    limited to ``wanted`` names if given and to the one owning ``bind`` if it is not a
    wildcard. IPv6 link-local addresses are skipped (an XAddr cannot carry their zone)."""
    out = []
    for iface in interfaces:
        if not iface.enabled or (wanted and iface.name not in wanted):
            continue
        for address, _prefix in iface.ipv4:
            out.append(LocalAddress(iface.name, iface.index, address, socket.AF_INET))
        for address, _prefix in iface.ipv6:
            ip = ipaddress.ip_address(address)
            if not ip.is_link_local:
                out.append(LocalAddress(iface.name, iface.index, address, socket.AF_INET6))
    if bind not in ("0.0.0.0", "::", ""):
        out = [a for a in out if a.address == bind]
    elif not wanted:
        # Loopback only when nothing else exists or it was asked for.
        real = [a for a in out if not ipaddress.ip_address(a.address).is_loopback]
        out = real or out
    return out


class DiscoveryTarget:
    def __init__(
        self,
        state: TargetState,
        addresses: list[LocalAddress],
        *,
        http_port: int,
        port: int = 3702,
        types: tuple[m.QName, ...] = (m.NVT, m.DEVICE),
        rng: random.Random | None = None,
    ) -> None:
        self.state = state
        self.addresses = addresses
        self.http_port = http_port
        self.port = port
        self.types = types
        self._rng = rng or random.Random()
        self._message_number = 0
        self._sockets: dict[int, socket.socket] = {}
        self._pending: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received = 0
        self.dropped = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        families = {a.family for a in self.addresses}
        for family in sorted(families):
            try:
                sock = self._open(family)
            except OSError as exc:
                log.warning(
                    "WS-Discovery: no %s socket on port %d: %s",
                    _family_name(family),
                    self.port,
                    exc,
                )
                continue
            self._sockets[family] = sock
            self._loop.add_reader(sock.fileno(), self._readable, sock)
        names = sorted({a.interface for a in self.addresses})
        log.info(
            "WS-Discovery target on port %d, interfaces %s", self.port, ", ".join(names) or "none"
        )
        if self.state.discoverable:
            self.send_hello()

    async def stop(self) -> None:
        if self.state.discoverable:
            self.send_bye()
        for handle in list(self._pending):
            handle.cancel()
        self._pending.clear()
        for sock in self._sockets.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    def _open(self, family: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(AttributeError, OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setblocking(False)
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                sock.bind(("0.0.0.0", self.port))
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
                sock.bind(("::", self.port))
            self._join(sock, family)
        except BaseException:
            sock.close()
            raise
        return sock

    def _family_addresses(self, family: int) -> list[LocalAddress]:
        return [a for a in self.addresses if a.family == family]

    # -- what we announce ------------------------------------------------------------------
    def endpoint(self, first_index: int | None = None) -> m.Endpoint:
        ordered = sorted(
            self.addresses, key=lambda a: (a.index != first_index, a.family != socket.AF_INET)
        )
        xaddrs = tuple(dict.fromkeys(self._xaddr(a) for a in ordered))
        return m.Endpoint(
            address=self.state.endpoint_address,
            types=self.types,
            scopes=self.state.scopes,
            xaddrs=xaddrs,
            metadata_version=self.state.metadata_version,
        )

    def _xaddr(self, address: LocalAddress) -> str:
        host = f"[{address.address}]" if address.family == socket.AF_INET6 else address.address
        return f"http://{host}:{self.http_port}/onvif/device_service"

    def _sequence(self) -> m.AppSequence:
        self._message_number += 1
        return m.AppSequence(self.state.instance_id, self._message_number)

    # -- sending ---------------------------------------------------------------------------
    def send_hello(self) -> None:
        self._multicast(m.build_hello(self.endpoint(), self._sequence()))

    def send_bye(self) -> None:
        self._multicast(m.build_bye(self.endpoint(), self._sequence()))

    def _multicast(self, data: bytes) -> None:
        for attempt in range(MULTICAST_REPEAT):
            if attempt == 0:
                self._multicast_once(data)
            elif self._loop is not None:
                delay = self._rng.uniform(0.05, 0.25) * attempt
                self._later(delay, self._multicast_once, data)

    def _multicast_once(self, data: bytes) -> None:
        for address in self.addresses:
            sock = self._sockets.get(address.family)
            if sock is None:
                continue
            try:
                if address.family == socket.AF_INET:
                    mreq = mreq_v4(address)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreq)
                    sock.sendto(data, (GROUP_V4, self.port))
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, address.index)
                    sock.sendto(data, (GROUP_V6, self.port, 0, address.index))
            except OSError as exc:
                log.debug("WS-Discovery: multicast on %s failed: %s", address.interface, exc)

    def _later(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        if len(self._pending) >= MAX_PENDING_REPLIES:
            self.dropped += 1
            return
        handles: list[asyncio.TimerHandle] = []

        def run() -> None:
            self._pending.discard(handles[0])
            fn(*args)

        handles.append(self._loop.call_later(delay, run))
        self._pending.add(handles[0])

    def _unicast(self, family: int, data: bytes, peer: tuple[object, ...]) -> None:
        sock = self._sockets.get(family)
        if sock is None:
            return
        try:
            sock.sendto(data, peer)
        except OSError as exc:
            log.debug("WS-Discovery: reply to %s failed: %s", peer[0], exc)

    # -- receiving -------------------------------------------------------------------------
    def _readable(self, sock: socket.socket) -> None:
        for _ in range(64):  # bounded per wake-up so one socket cannot starve the loop
            try:
                data, ancillary, _flags, peer = sock.recvmsg(m.MAX_MESSAGE_BYTES + 1, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("WS-Discovery: receive failed: %s", exc)
                return
            self.received += 1
            index, multicast = _packet_info(sock.family, ancillary)
            if index is not None and index not in {a.index for a in self.addresses}:
                continue  # an interface we were not given
            if not self.state.discoverable:
                continue  # Core §7.2: a non-discoverable device does not listen
            try:
                message = m.parse(data)
            except m.DiscoveryError as exc:
                log.debug("WS-Discovery: dropped datagram from %s: %s", peer[0], exc)
                continue
            self._handle(sock.family, message, peer, index, multicast)

    def _handle(
        self,
        family: int,
        message: m.Message,
        peer: tuple[object, ...],
        index: int | None,
        multicast: bool,
    ) -> None:
        if isinstance(message, m.Probe):
            endpoint = self.endpoint(index)
            try:
                if not m.matches(endpoint, message):
                    return
            except m.MatchingRuleNotSupported:
                if not multicast:  # Core §7.3.6: fault only for unicast probes
                    self._unicast(family, m.build_matching_rule_fault(message.message_id), peer)
                return
            reply = m.build_probe_matches(endpoint, message.message_id, self._sequence())
        elif isinstance(message, m.Resolve):
            if message.address != self.state.endpoint_address:
                return
            reply = m.build_resolve_matches(
                self.endpoint(index), message.message_id, self._sequence()
            )
        else:
            return  # Hello/Bye/matches of other devices: nothing to answer
        if multicast:
            self._later(self._rng.uniform(0, APP_MAX_DELAY_S), self._unicast, family, reply, peer)
        else:
            self._unicast(family, reply, peer)

    # -- changes ---------------------------------------------------------------------------
    def update(
        self, *, scopes: tuple[str, ...] | None = None, addresses: list[LocalAddress] | None = None
    ) -> bool:
        """Apply new scopes or addresses; True (and a new Hello) when anything changed."""
        changed = False
        if scopes is not None and scopes != self.state.scopes:
            self.state.scopes = scopes
            changed = True
        if addresses is not None and addresses != self.addresses:
            old = {a.family for a in self.addresses}
            self.addresses = addresses
            for family, sock in self._sockets.items():
                if family in old:
                    self._join(sock, family)
            changed = True
        if changed:
            self.state.metadata_version += 1
            if self.state.discoverable:
                self.send_hello()
        return changed

    def _join(self, sock: socket.socket, family: int) -> None:
        """Join the discovery group on every chosen interface (joining twice is harmless)."""
        for address in self._family_addresses(family):
            with contextlib.suppress(OSError):  # already a member there
                if family == socket.AF_INET:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq_v4(address))
                else:
                    sock.setsockopt(
                        socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, _mreq_v6(address.index)
                    )

    def set_discoverable(self, discoverable: bool) -> None:
        if discoverable == self.state.discoverable:
            return
        if discoverable:
            self.state.discoverable = True
            self.send_hello()
        else:
            self.send_bye()  # leaving: say so once, then stay silent
            self.state.discoverable = False


def _packet_info(family: int, ancillary: list[tuple[int, int, bytes]]) -> tuple[int | None, bool]:
    """(interface index, was it multicast) from IP_PKTINFO / IPV6_PKTINFO."""
    for level, kind, data in ancillary:
        if family == socket.AF_INET and level == socket.IPPROTO_IP and kind == _IP_PKTINFO:
            index, _spec_dst, dst = struct.unpack("i4s4s", data[:12])
            return index, ipaddress.IPv4Address(dst).is_multicast
        if family == socket.AF_INET6 and level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO:
            dst, index = struct.unpack("16sI", data[:20])
            return index, ipaddress.IPv6Address(dst).is_multicast
    return None, False


def _family_name(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"
