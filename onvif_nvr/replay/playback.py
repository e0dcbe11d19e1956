"""Replay sessions on the RTSP server: ``rtsp://box:port/replay/<recording token>``
(ONVIF Streaming §6).

The RTSP server hands every DESCRIBE, SETUP, PLAY, PAUSE and TEARDOWN on a replay URL (and
every request of a connection whose session is a replay) to :class:`Replays`. A replay
session is one client's own timeline, no fan-out: a :class:`ReplaySession` per connection
runs one playback of the shared :class:`~onvif_nvr.replay.reader.ReplayReader` at a time
in a task of its own, and :class:`~onvif_nvr.replay.sender.ReplaySender` turns its units
into RTP packets with the 0xABAC extension.

* A PLAY while a playback runs waits for it (queued, RFC 2326 §10.5) unless it says
  ``Immediate: yes``: then the running playback is cancelled and the new one's first unit
  has D.
* With rate control a unit goes out when :meth:`ReplaySender.due_ns` says; without, as fast
  as the connection takes it: once the transport holds more than ``HIGH_WATER_BYTES``
  unsent, the task waits for it to drain before reading on, so memory is bounded by the
  reader's chunk plus that mark. Over UDP there is no back-pressure: without rate control
  the units go out at once and the socket drops what it cannot hold (clients should use
  TCP, §6.1).
* At the end of the footage (or of the range) the task stops sending; the session does not
  become PAUSED, a PLAY starts anew. With a closed range each track's latest unit is held
  until the next one of that track is read, so the last one sent before the range's end
  carries T (GStreamer's ``rtponvifparse`` ends the stream on T). PAUSE cancels the playback and keeps the time of the
  last unit sent as the resume point (a PLAY without Range starts at the clean point at or
  before it: a GOP may be sent twice).
* RTCP: sender reports every ``SR_INTERVAL_S`` — with rate control the current wall time
  and playback's RTP time, without both zero (§6.8).
* The session timeout is the Replay service's SessionTimeout, read at SETUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

from onvif_nvr.clock import Clock
from onvif_nvr.errors import NoRecording
from onvif_nvr.replay.live import Track
from onvif_nvr.replay.reader import (
    VIDEO,
    EndReason,
    Gap,
    Playback,
    RecordingMedia,
    ReplayReader,
    ReplayUnit,
)
from onvif_nvr.replay.sender import (
    InvalidRange,
    Packet,
    PlayOptions,
    ReplaySender,
    play_options,
    replay_tracks,
)
from onvif_nvr.rtsp import sdp
from onvif_nvr.rtsp.headers import (
    ClockRange,
    RtpInfo,
    SessionHeader,
    TransportSpec,
    format_range,
    format_rtp_info,
    format_session,
    format_transport,
    parse_transport,
)
from onvif_nvr.rtsp.message import Headers, Request, Response

log = logging.getLogger(__name__)

#: The path prefix of replay resources (``services/replay.py`` hands out these URIs).
REPLAY_PREFIX = "/replay/"
#: RTSP-over-HTTP tunnel URLs carry this prefix (stripped as for live streams).
TUNNEL_PREFIX = "/rtsp-tunnel"
#: The feature tag of the ONVIF replay extensions (§6.2.1).
FEATURE_TAG = "onvif-replay"
#: Unsent bytes in the transport above which a playback without rate control waits.
HIGH_WATER_BYTES = 256 * 1024
#: Rate-controlled playback: units due within this much are sent together.
SEND_AHEAD_NS = 2_000_000
SR_INTERVAL_S = 5.0
#: Methods a replay session handles itself (the rest are the server's, for every session).
METHODS = frozenset({"DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN"})


def replay_path(uri: str) -> tuple[str, str] | None:
    """(recording token, track control or "") of a replay URL, None for other URLs."""
    try:
        path = urllib.parse.unquote(urllib.parse.urlsplit(uri).path).rstrip("/")
    except ValueError:
        return None
    if path.startswith(TUNNEL_PREFIX + "/"):
        path = path[len(TUNNEL_PREFIX) :]
    if not path.startswith(REPLAY_PREFIX):
        return None
    rest = path[len(REPLAY_PREFIX) :]
    token, _, control = rest.rpartition("/")
    if token and control.startswith("trackID="):
        return token, control
    return (rest, "") if rest else None


def unsupported_tags(headers: Headers) -> list[str]:
    """The option tags of ``Require`` headers other than ``onvif-replay``."""
    tags = []
    for value in headers.get_all("Require"):
        for tag in value.split(","):
            tag = tag.strip()
            if tag and tag.lower() != FEATURE_TAG:
                tags.append(tag)
    return tags


class Connection(Protocol):
    """What a replay session needs of the RTSP server's connection."""

    session_id: str | None
    session_timeout_s: int
    channels: dict[int, int]
    udp_ports: dict[int, tuple[int, int]]
    peer: str
    replay: ReplaySession | None

    @property
    def transport(self) -> asyncio.WriteTransport: ...

    @property
    def writer(self) -> Any: ...

    def replay_transport(self, specs: list[TransportSpec], track: Track) -> TransportSpec | None:
        """The transport the live server would choose for ``specs`` (unicast only)."""
        ...

    def replay_output(self) -> Callable[[list[Packet]], None]:
        """Writes packets to the session's transport (interleaved, or UDP datagrams)."""
        ...

    def send(self, response: Response) -> None: ...


class Replays:
    """Every replay session of one RTSP server: the reader they share and the timeout."""

    def __init__(
        self,
        reader: ReplayReader,
        clock: Clock,
        session_timeout_s: Callable[[], int],
        *,
        high_water_bytes: int = HIGH_WATER_BYTES,
    ) -> None:
        self.reader = reader
        self.clock = clock
        self.session_timeout_s = session_timeout_s
        self.high_water_bytes = high_water_bytes
        self.sessions: set[ReplaySession] = set()

    def owns(self, connection: Connection, uri: str) -> bool:
        """Whether the request belongs to replay: a replay URL, or the connection's session
        is a replay."""
        return connection.replay is not None or replay_path(uri) is not None

    async def handle(
        self, connection: Connection, method: str, request: Request, headers: Headers
    ) -> Response | None:
        """Answer ``request`` (None when the answer was sent already)."""
        tags = unsupported_tags(request.headers)
        if tags:
            headers.add("Unsupported", ", ".join(tags))
            return Response(551, "", headers)
        found = replay_path(request.uri)
        session = connection.replay
        if method == "DESCRIBE":
            if found is None or found[1]:
                return Response(404, "", headers)
            return await self._describe(request, found[0], headers)
        if method == "SETUP":
            if found is None:
                return Response(404, "", headers)
            return await self._setup(connection, request, found, headers)
        if session is None:
            return Response(455 if method != "TEARDOWN" else 454, "", headers)
        if method == "PLAY":
            return await session.play(request, headers)
        if method == "PAUSE":
            await session.pause()
            return Response(200, "", headers)
        # TEARDOWN
        await session.close()
        connection.replay = None
        connection.session_id = None
        connection.channels.clear()
        connection.udp_ports.clear()
        return Response(200, "", headers)

    async def _describe(self, request: Request, token: str, headers: Headers) -> Response:
        try:
            media = await self.reader.recording(token)
        except NoRecording:
            return Response(404, "", headers)
        data = await self.reader.data_range(media)
        description = sdp.SessionDescription(session_name="onvif-nvr replay")
        description.attributes.append(("control", "*"))
        if data is not None:
            description.attributes.append(("range", format_range(ClockRange(*data))))
        description.media.extend(t.media for t in replay_tracks(media))
        base = request.uri if request.uri.endswith("/") else request.uri + "/"
        headers.add("Content-Base", base)
        headers.add("Content-Type", "application/sdp")
        return Response(200, "", headers, bytes(description))

    async def _setup(
        self,
        connection: Connection,
        request: Request,
        found: tuple[str, str],
        headers: Headers,
    ) -> Response:
        token, control = found
        session = connection.replay
        if session is not None and session.media.token != token:
            return Response(455, "", headers)  # aggregate: one recording per session
        if session is not None and session.running:
            return Response(455, "", headers)
        if session is None:
            if connection.session_id is not None:
                return Response(459, "", headers)  # a live session holds this connection
            try:
                media = await self.reader.recording(token)
            except NoRecording:
                return Response(404, "", headers)
            session = ReplaySession(self, connection, media)
        track = session.track(control) if control else session.first_track()
        if track is None:
            return Response(404, "", headers)
        try:
            specs = parse_transport(request.headers.get("Transport", ""))
        except ValueError:
            return Response(461, "", headers)
        reply = connection.replay_transport(specs, track)
        if reply is None:
            return Response(461, "", headers)
        reply.ssrc = track.ssrc
        session.set_up.add(track.number)
        if connection.replay is None:
            connection.replay = session
            self.sessions.add(session)
            connection.session_id = secrets.token_hex(8)
            connection.session_timeout_s = self.session_timeout_s()
        headers.add("Transport", format_transport([reply]))
        return Response(200, "", headers)


@dataclasses.dataclass
class _Running:
    options: PlayOptions
    task: asyncio.Task[None]


class ReplaySession:
    """One client's replay of one recording, across its PLAYs and PAUSEs."""

    def __init__(self, replays: Replays, connection: Connection, media: RecordingMedia) -> None:
        self.replays = replays
        self.connection = connection
        self.media = media
        self.tracks = replay_tracks(media)
        self.set_up: set[int] = set()
        self.sender: ReplaySender | None = None
        self._running: _Running | None = None
        self._queued: list[PlayOptions] = []
        #: Where a PLAY without Range starts: the last unit sent (after a PAUSE), else the
        #: recording's start.
        self._resume_ns: int | None = None
        self._paused = False
        self._closed = False
        self._output: Callable[[list[Packet]], None] | None = None
        #: What playbacks ended with, for logs and tests.
        self.end_reasons: list[str] = []

    @property
    def running(self) -> bool:
        return self._running is not None

    def track(self, control: str) -> Track | None:
        return next((t for t in self.tracks if t.control == control), None)

    def first_track(self) -> Track | None:
        return self.tracks[0] if self.tracks else None

    async def play(self, request: Request, headers: Headers) -> Response | None:
        if not self.set_up:
            return Response(455, "", headers)
        replays = self.replays
        recording_start_ns = 0
        clock_range = request.headers.get("Range", "").strip().lower().startswith("clock")
        if self._resume_ns is None or not clock_range:
            data = await replays.reader.data_range(self.media)
            recording_start_ns = data[0] if data is not None else 0
        resume_ns = self._resume_ns if self._resume_ns is not None else recording_start_ns
        try:
            options = play_options(
                request.headers,
                request.cseq,
                recording_start_ns=recording_start_ns,
                resume_ns=resume_ns,
            )
        except InvalidRange:
            return Response(457, "", headers)
        except ValueError:
            return Response(400, "", headers)
        served = frozenset(n for n in self.set_up if n == VIDEO or not options.request.reverse)
        options = dataclasses.replace(
            options, request=dataclasses.replace(options.request, tracks=served)
        )
        if self.sender is None:
            self.sender = ReplaySender([t for t in self.tracks if t.number in self.set_up])
        end = options.request.end_ns
        headers.add("Range", format_range(ClockRange(options.request.start_ns, end)))
        if options.scale != 1.0:
            headers.add("Scale", _format_scale(options.scale))
        if not options.rate_control:
            headers.add("Rate-Control", "no")
        url = request.uri.rstrip("/")
        found = replay_path(url)
        if found is not None and found[1]:
            url = url.rpartition("/")[0]
        infos = []
        for track in self.sender.tracks:
            rtptime = track.base_rtptime if options.rate_control else None
            infos.append(RtpInfo(f"{url}/{track.control}", track.next_seq, rtptime))
        if infos and self._running is None:
            headers.add("RTP-Info", format_rtp_info(infos))
        headers.add("Session", _session(self.connection))
        # The answer goes before the first packet of the new playback.
        self.connection.send(Response(200, "", headers))
        if self._running is not None and not options.immediate:
            self._queued.append(options)
            return None
        await self._cancel()
        self._queued.clear()
        # A PLAY without Range after PAUSE resumes (no D); with a Range it jumps.
        self._start(options, resume=self._paused and "Range" not in request.headers)
        return None

    def _start(self, options: PlayOptions, *, resume: bool = False) -> None:
        assert self.sender is not None
        if self._output is None:
            self._output = self.connection.replay_output()
        jumped = False if resume else None
        self._paused = False
        self.sender.play(options, self.replays.clock.monotonic_ns(), jumped=jumped)
        playback = self.replays.reader.play(self.media, options.request)
        task = asyncio.get_running_loop().create_task(self._run(playback, options))
        self._running = _Running(options, task)

    async def _cancel(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running.task

    async def pause(self) -> None:
        self._queued.clear()
        if self._running is not None:
            await self._cancel()
        self._paused = True

    async def close(self) -> None:
        self._closed = True
        self._queued.clear()
        await self._cancel()
        self.replays.sessions.discard(self)

    def stop(self) -> None:
        """Stop at once (the connection is going away)."""
        self._closed = True
        self._queued.clear()
        running, self._running = self._running, None
        if running is not None:
            running.task.cancel()
        self.replays.sessions.discard(self)

    async def _run(self, playback: Playback, options: PlayOptions) -> None:
        sender = self.sender
        output = self._output
        assert sender is not None and output is not None
        clock = self.replays.clock
        transport = self.connection.transport
        tcp = bool(self.connection.channels)
        high = self.replays.high_water_bytes
        next_sr_ns = clock.monotonic_ns()
        # A closed range: each track's latest unit is held until the next one of that track
        # is read, so the one the range ends with goes out with T (below).
        closed = options.request.end_ns is not None
        held: dict[int, ReplayUnit] = {}

        def send(unit: ReplayUnit) -> bool:
            packets = sender.packets(unit)
            if packets:
                if transport.is_closing():
                    return False
                output(packets)
                self._resume_ns = unit.timed.wall_ns
            return True

        try:
            async for item in playback:
                if isinstance(item, Gap):
                    sender.gap(item)
                    continue
                assert isinstance(item, ReplayUnit)
                previous = held.pop(item.timed.track, None)
                if previous is not None and not send(previous):
                    break
                due = sender.due_ns(item)
                if due is not None:
                    wait_ns = due - clock.monotonic_ns()
                    if wait_ns > SEND_AHEAD_NS:
                        await clock.sleep(wait_ns / 1e9)
                if closed and not item.terminal:
                    held[item.timed.track] = item
                elif not send(item):
                    break
                now_ns = clock.monotonic_ns()
                if now_ns >= next_sr_ns:
                    next_sr_ns = now_ns + int(SR_INTERVAL_S * 1e9)
                    wall_ns = clock.wall_ns()
                    output(
                        [
                            (t.number, True, sender.sender_report(t, wall_ns, now_ns))
                            for t in sender.tracks
                        ]
                    )
                if tcp and transport.get_write_buffer_size() > high:
                    await self._drain(high)
                elif due is None:
                    await asyncio.sleep(0)  # let the rest of the box run between units
            else:
                # The playback ran to its end (not cancelled, not closed): the held units
                # are the last of their tracks — T ("no more data is available for a
                # track", §6.3), which is where GStreamer's rtponvifparse ends the stream.
                for unit in sorted(held.values(), key=lambda u: u.timed.wall_ns):
                    if playback.end_reason is EndReason.RANGE_END:
                        unit = dataclasses.replace(unit, terminal=True)
                    if not send(unit):
                        break
                held.clear()
        except (ConnectionError, OSError) as exc:
            log.debug("replay %s: %s", self.connection.peer, exc)
        finally:
            await playback.aclose()
        reason = playback.end_reason.value if playback.end_reason else "?"
        self.end_reasons.append(reason)
        log.debug("replay %s of %s ended: %s", self.connection.peer, self.media.token, reason)
        if self._running is not None and self._running.task is asyncio.current_task():
            self._running = None
            if self._queued and not self._closed:
                self._start(self._queued.pop(0))

    async def _drain(self, high: int) -> None:
        """Wait until the connection took most of what is buffered (back-pressure)."""
        writer = self.connection.writer
        transport = self.connection.transport
        if isinstance(writer, asyncio.StreamWriter):
            transport.set_write_buffer_limits(high=high, low=high // 4)
            await writer.drain()
            return
        # A tunnel's GET: no flow-control callbacks reach us; look again shortly.
        while transport.get_write_buffer_size() > high // 4 and not transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


def _format_scale(scale: float) -> str:
    return f"{scale:g}" if "." in f"{scale:g}" else f"{scale:.1f}"


def _session(connection: Connection) -> str:
    assert connection.session_id is not None
    return format_session(SessionHeader(connection.session_id, connection.session_timeout_s))
