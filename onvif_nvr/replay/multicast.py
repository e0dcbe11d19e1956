"""UDP multicast delivery of live streams (RFC 2326 §1.6; ONVIF Streaming §5.1.1, §5.3.3).

A :class:`MulticastGroup` is one more viewer of a stream's :class:`~.live.Fanout`: it sends
each packet once, with one ``sendto``, to ``group:port`` (RTP) and ``group:port+1`` (RTCP,
the fan-out's sender reports) of its track, whatever the number of RTSP sessions that
listen to it. The sessions (SETUP with ``multicast``) and the Media service's
StartMulticastStreaming (``autostart``) hold it; it sends while a session plays or autostart
is on, and is dropped when the last session goes (TEARDOWN, closed) and autostart is off (ONVIF Streaming: a multicast configuration stops
when no RTSP session uses it and its AutoStart flag is not set).

Addresses: :class:`MulticastPolicy` gives each stream path a default group in the configured
network (a stable hash of the path, probing past groups taken by other paths), tracks on
``port``, ``port+2``... (RTP even, RTCP odd). A client's own ``destination``/``port`` is
honoured when the policy allows client destinations (any IPv4 multicast group outside the
local network control block 224.0.0.0/24); its ``ttl`` is capped at ``max_ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from onvif_nvr.clock import Clock
from onvif_nvr.rtsp.headers import TransportSpec

if TYPE_CHECKING:
    from onvif_nvr.replay.live import Fanout, Feed

log = logging.getLogger(__name__)

#: How often an autostarted group looks for its stream again after it ended.
AUTOSTART_RETRY_S = 1.0

_LOCAL_CONTROL = ipaddress.IPv4Network("224.0.0.0/24")
_MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")


@dataclasses.dataclass(frozen=True)
class MulticastTarget:
    """Where a stream goes by multicast: one group, an RTP port per track (RTCP: +1)."""

    address: str
    ports: dict[int, int]
    ttl: int


@dataclasses.dataclass(frozen=True)
class MulticastPolicy:
    """Where multicast streams go (``[rtsp]`` settings)."""

    #: Default groups are taken from this IPv4 multicast network (organisation-local scope).
    network: str = "239.192.0.0/16"
    #: RTP port of a stream's first track on its default group; track N uses port + 2N.
    port: int = 40000
    #: Time-to-live of default groups (1: the local subnet only).
    ttl: int = 1
    #: A TTL a client or the Media service asks for is capped at this.
    max_ttl: int = 16
    #: Honour a client's own destination/port in SETUP (ONVIF Streaming multicast SETUP).
    client_destination: bool = True
    #: Local IPv4 address of the interface multicast leaves by; "" = the bind address, or
    #: the routing table when the server listens on every address.
    interface: str = ""

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.network, strict=False)
        if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(_MULTICAST):
            raise ValueError(f"multicast network {self.network!r} is not IPv4 multicast")
        if not 0 < self.port < 65534 or self.port % 2:
            raise ValueError(f"multicast port {self.port} must be even, 2..65532")
        if not 0 < self.ttl <= self.max_ttl <= 255:
            raise ValueError("multicast TTL must be 1..max_ttl and max_ttl at most 255")
        if self.interface:
            ipaddress.IPv4Address(self.interface)

    def default_target(self, path: str, taken: Callable[[str], bool]) -> MulticastTarget:
        """The default group of ``path``: track N on port + 2N."""
        address = self.default_address(path, taken)
        return MulticastTarget(address, {0: self.port, 1: self.port + 2}, self.ttl)

    def default_address(self, path: str, taken: Callable[[str], bool]) -> str:
        """A stable group for ``path``: hashed into the network, past groups ``taken``."""
        net = ipaddress.IPv4Network(self.network, strict=False)
        hosts = max(net.num_addresses - 2, 1)
        first = int(net.network_address) + (1 if net.num_addresses > 2 else 0)
        start = zlib.crc32(path.encode()) % hosts
        for step in range(min(hosts, 4096)):
            address = str(ipaddress.IPv4Address(first + (start + step) % hosts))
            if not taken(address):
                return address
        return str(ipaddress.IPv4Address(first + start))

    def client_address_allowed(self, address: str) -> bool:
        return self.client_destination and is_group(address)

    def cap_ttl(self, ttl: int | None) -> int:
        return self.ttl if ttl is None else max(1, min(ttl, self.max_ttl))


def is_group(address: str) -> bool:
    """An IPv4 multicast address a stream may be sent to (not 224.0.0.0/24)."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return ip.is_multicast and ip not in _LOCAL_CONTROL


class Member(Protocol):
    """An RTSP session listening to a group (the server's connection)."""

    def ended(self, reason: str) -> None: ...


class MulticastGroup:
    """One stream sent to one multicast group; a :class:`~.live.Viewer` of its fan-out."""

    layout = None  # a UDP viewer for the fan-out

    def __init__(
        self,
        path: str,
        address: str,
        ports: dict[int, int],
        ttl: int,
        *,
        bind: str,
        interface: str,
        on_ended: Callable[[MulticastGroup, str], None],
    ) -> None:
        self.path = path
        self.address = address
        #: Track number -> RTP port (RTCP: +1).
        self.ports = dict(ports)
        self.ttl = ttl
        #: RTSP sessions set up on the group, and those of them playing.
        self.members: set[Member] = set()
        self.listeners: set[Member] = set()
        self.autostart = False
        #: Joined to its fan-out (sending).
        self.sending = False
        #: The fan-out it is joined to while sending.
        self.fanout: Fanout | None = None
        #: Datagrams and bytes sent to the group (RTP and RTCP), for /metrics.
        self.sent = 0
        self.bytes_sent = 0
        self._on_ended = on_ended
        self._dest: dict[tuple[int, bool], tuple[str, int]] = {}
        self._rebuild()
        self.sock = _open_socket(bind, interface, ttl)

    def _rebuild(self) -> None:
        self._dest = {}
        for number, port in self.ports.items():
            self._dest[(number, False)] = (self.address, port)
            self._dest[(number, True)] = (self.address, port + 1)

    def add_track(self, number: int, port: int) -> int:
        """The RTP port of track ``number`` in this group (``port`` if it has none yet)."""
        if number not in self.ports:
            self.ports[number] = port
            self._rebuild()
        return self.ports[number]

    # -- live.Viewer ------------------------------------------------------------------------

    def send_tcp(self, buffer: bytes) -> None:  # never called: layout is None
        raise AssertionError("a multicast group has no interleaved channels")

    def send_udp(self, packets: Sequence[tuple[int, bool, bytes]]) -> None:
        sendto = self.sock.sendto
        dest = self._dest
        for number, rtcp, packet in packets:
            address = dest.get((number, rtcp))
            if address is None:
                continue
            try:
                sendto(packet, address)
                self.sent += 1
                self.bytes_sent += len(packet)
            except (BlockingIOError, InterruptedError):
                pass  # socket buffer full: the group loses this packet, UDP is lossy
            except OSError as exc:
                log.debug("multicast %s:%s: send failed: %s", self.address, address[1], exc)

    def ended(self, reason: str) -> None:
        """The stream is gone: every member session ends."""
        self.sending = False
        for member in list(self.members):
            member.ended(reason)
        self.members.clear()
        self.listeners.clear()
        self._on_ended(self, reason)

    def close(self) -> None:
        self.sending = False
        with contextlib.suppress(OSError):
            self.sock.close()


def _open_socket(bind: str, interface: str, ttl: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        # Listeners on this host (players beside the box) get the stream too.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        local = interface or (bind if bind not in ("", "0.0.0.0") else "")
        if local:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        if bind and bind != "0.0.0.0" and ":" not in bind:
            sock.bind((bind, 0))  # else the kernel picks the address when sending
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


#: The configured group of a stream path (the Media service's encoder configuration),
#: None: the default of the path.
MulticastLookup = Callable[[str], Awaitable[MulticastTarget | None]]


class Streams(Protocol):
    """What the groups need of the RTSP server."""

    def feed_for(self, uri: str) -> tuple[str, Feed, str] | None: ...

    def fanout(self, feed: Feed) -> Fanout: ...


class MulticastGroups:
    """The multicast groups of one server, by (stream path, group address).

    RTSP sessions hold the group they were set up on and play it; StartMulticastStreaming
    autostarts one group per stream. A group sends while a holder plays or it is
    autostarted, and is dropped (its socket closed) when the last holder goes without
    autostart.
    """

    def __init__(self, policy: MulticastPolicy, bind: str, clock: Clock, streams: Streams) -> None:
        self.policy = policy
        self._bind = bind
        self._clock = clock
        self._streams = streams
        self._groups: dict[tuple[str, str], MulticastGroup] = {}
        self._autostart: dict[MulticastGroup, asyncio.Task[None]] = {}
        #: Set by the composition root (see :meth:`target`).
        self.lookup: MulticastLookup | None = None
        self._closed_bytes = 0

    @property
    def bytes_sent(self) -> int:
        """Bytes sent to every group since start, closed groups included."""
        return self._closed_bytes + sum(g.bytes_sent for g in self._groups.values())

    @property
    def groups(self) -> list[MulticastGroup]:
        return list(self._groups.values())

    @property
    def listing(self) -> list[tuple[str, str, bool]]:
        """(stream path, group, sending) of every group."""
        return [(g.path, g.address, g.sending) for g in self._groups.values()]

    async def target(self, path: str) -> MulticastTarget:
        """Where multicast viewers of ``path`` that ask for no destination go: the running
        group of the stream (the autostarted one first), else the configured one
        (:attr:`lookup`), else the default group of the path."""
        running = [g for (p, _), g in self._groups.items() if p == path]
        if running:
            group = next((g for g in running if g.autostart), running[0])
            return MulticastTarget(group.address, dict(group.ports), group.ttl)
        if self.lookup is not None:
            configured = await self.lookup(path)
            if configured is not None and is_group(configured.address):
                ttl = self.policy.cap_ttl(configured.ttl)
                return MulticastTarget(configured.address, dict(configured.ports), ttl)
        taken = {address for (p, address) in self._groups if p != path}
        return self.policy.default_target(path, taken.__contains__)

    def start(
        self, path: str, group: str, port: int, ttl: int, *, audio_port: int | None = None
    ) -> None:
        """Autostart ``group`` for the stream at ``path`` (see RtspServer.start_multicast)."""
        found = self._streams.feed_for(path)
        if found is None or found[2]:
            raise LookupError(f"no live stream at {path!r}")
        stream_path = found[0]
        if not is_group(group):
            raise ValueError(f"{group!r} is not an IPv4 multicast group")
        audio_port = port + 2 if audio_port is None else audio_port
        if not (0 < port < 65535 and 0 < audio_port < 65535):
            raise ValueError(f"multicast port {port}/{audio_port} out of range")
        current = self._groups.get((stream_path, group))
        if current is not None and current.autostart:
            return
        for other in [g for (p, _), g in self._groups.items() if p == stream_path]:
            if other.autostart:  # one autostarted group per stream: the new one replaces it
                self._stop_autostart(other)
        ttl = self.policy.cap_ttl(ttl)
        if current is None:
            current = self._new(stream_path, group, {0: port, 1: audio_port}, ttl)
        current.autostart = True
        self._autostart[current] = asyncio.create_task(self._run_autostart(current))

    def stop(self, path: str) -> None:
        """Stop what :meth:`start` started (RTSP sessions on the group go on)."""
        found = self._streams.feed_for(path)
        stream_path = found[0] if found is not None else "/" + path.strip("/")
        for (p, _), group in list(self._groups.items()):
            if p == stream_path and group.autostart:
                self._stop_autostart(group)

    def group_for(
        self, path: str, track: int, spec: TransportSpec, target: MulticastTarget
    ) -> MulticastGroup | None:
        """The group a multicast SETUP of ``track`` joins (made if needed), None: refused.
        ``target``: where the stream goes when the client names no destination."""
        policy = self.policy
        wanted_port = spec.port[0] if spec.port and policy.client_destination else None
        if spec.destination:
            if not policy.client_address_allowed(spec.destination):
                return None
            address, ttl = spec.destination, policy.cap_ttl(spec.ttl)
        else:
            address, ttl = target.address, target.ttl
        if wanted_port is not None and wanted_port >= 65535:
            wanted_port = None
        group = self._groups.get((path, address))
        if group is None:
            if wanted_port is not None:
                ports = {track: wanted_port}
            elif spec.destination:
                ports = {track: policy.port + 2 * track}
            else:
                ports = dict(target.ports)
            try:
                group = self._new(path, address, ports, ttl)
            except OSError as exc:
                log.warning("multicast %s -> %s: %s", path, address, exc)
                return None
        default = target.ports.get(track, policy.port + 2 * track)
        group.add_track(track, wanted_port or default)
        return group

    def hold(self, group: MulticastGroup, member: Member) -> None:
        """A session set up on ``group`` (the group lives while someone holds it)."""
        group.members.add(member)

    def play(self, group: MulticastGroup, member: Member, fanout: Fanout) -> None:
        group.members.add(member)
        group.listeners.add(member)
        if not group.sending:
            self._join(group, fanout)

    def pause(self, group: MulticastGroup, member: Member) -> None:
        """A session stops playing: the group stops sending when nobody else listens."""
        group.listeners.discard(member)
        fanout = group.fanout
        if not group.listeners and not group.autostart and group.sending and fanout is not None:
            group.sending, group.fanout = False, None
            fanout.leave(group)

    def release(self, group: MulticastGroup, member: Member) -> None:
        """A session is done with ``group`` (TEARDOWN, closed, refused SETUP)."""
        self.pause(group, member)
        group.members.discard(member)
        if not group.members and not group.autostart:
            self._drop(group)

    def close(self) -> None:
        for task in self._autostart.values():
            task.cancel()
        self._autostart.clear()
        for group in list(self._groups.values()):
            group.close()
        self._groups.clear()

    def _new(self, path: str, address: str, ports: dict[int, int], ttl: int) -> MulticastGroup:
        group = MulticastGroup(
            path,
            address,
            ports,
            ttl,
            bind=self._bind,
            interface=self.policy.interface,
            on_ended=self._ended,
        )
        self._groups[(path, address)] = group
        log.info("multicast %s -> %s:%s ttl %s", path, address, min(ports.values()), ttl)
        return group

    def _join(self, group: MulticastGroup, fanout: Fanout) -> None:
        group.sending = True
        group.fanout = fanout
        fanout.join(group)

    def _drop(self, group: MulticastGroup) -> None:
        if self._groups.get((group.path, group.address)) is group:
            del self._groups[(group.path, group.address)]
            self._closed_bytes += group.bytes_sent
        fanout, group.fanout = group.fanout, None
        if group.sending and fanout is not None:
            group.sending = False
            fanout.leave(group)
        group.close()

    def _stop_autostart(self, group: MulticastGroup) -> None:
        group.autostart = False
        task = self._autostart.pop(group, None)
        if task is not None:
            task.cancel()
        if not group.members:
            self._drop(group)
        elif not group.listeners and group.sending and group.fanout is not None:
            fanout, group.fanout, group.sending = group.fanout, None, False
            fanout.leave(group)

    def _ended(self, group: MulticastGroup, reason: str) -> None:
        group.fanout = None
        if not group.autostart:
            self._drop(group)
        else:
            log.info(
                "multicast %s -> %s: %s; waiting for the stream", group.path, group.address, reason
            )

    async def _run_autostart(self, group: MulticastGroup) -> None:
        """Keep an autostarted group joined to its stream's fan-out (the stream may end and
        come back: a camera reconnects, a recorder restarts)."""
        while group.autostart:
            if not group.sending:
                found = self._streams.feed_for(group.path)
                if found is not None and found[1].parameters() != (None, None):
                    self._join(group, self._streams.fanout(found[1]))
            await self._clock.sleep(AUTOSTART_RETRY_S)
