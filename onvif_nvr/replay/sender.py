"""Replay as RTP, sans-IO: a PLAY request's headers as a :class:`PlayRequest`, and a
playback's units as RTP packets with the ONVIF replay extension (Streaming §6).

The RTSP server (a later step) owns the sockets; this module decides what goes out and when:

* :func:`play_options` reads ``Range: clock=`` (or ``npt=`` from the recording's start, for
  ordinary players), ``Scale`` (its sign is the direction), ``Frames``, ``Rate-Control`` and
  ``Immediate`` of a PLAY and checks that a closed range runs the way Scale says.
* :class:`ReplaySender` packetizes each :class:`~onvif_nvr.replay.reader.ReplayUnit` with the
  live packetizers (``replay/live.py`` tracks: one SSRC and sequence space per track for the
  whole session, so sequence numbers increase in delivery order, also backward) and puts the
  extension (capture time, C/E/D/T, the PLAY's CSeq) in the first packet of every unit. RTP
  times: with ``Rate-Control: no`` from the original capture time (the same backward as
  forward, §6.7); with rate control, playback time (capture time since the PLAY's start,
  divided by Scale — decreasing inside a GOP backward) — and :meth:`ReplaySender.due_ns`
  tells when a unit is due (backward, a GOP at once, when its last picture is to be shown).
  A :class:`~onvif_nvr.replay.reader.Gap` is skipped in playback time.
"""

from __future__ import annotations

import dataclasses
import struct

from onvif_nvr.replay.live import Track, make_tracks
from onvif_nvr.replay.reader import Gap, PlayRequest, RecordingMedia, ReplayUnit
from onvif_nvr.rtsp import onvif_ext
from onvif_nvr.rtsp.headers import (
    ClockRange,
    NptRange,
    parse_frames,
    parse_range,
    parse_scale,
    parse_yes_no,
)
from onvif_nvr.rtsp.message import Headers
from onvif_nvr.rtsp.rtp import SenderReport, build_compound, wall_ns_to_ntp

_RTP = struct.Struct("!BBHII")


@dataclasses.dataclass(frozen=True, slots=True)
class PlayOptions:
    """One PLAY of a replay session."""

    request: PlayRequest
    #: ``Rate-Control`` (default yes): the server paces the stream.
    rate_control: bool
    #: ``Scale`` (default 1.0; negative backward).
    scale: float
    #: ``Immediate: yes``: replaces the playback running now.
    immediate: bool
    #: The PLAY's CSeq (its low byte goes into every extension).
    cseq: int


class InvalidRange(ValueError):
    """A Range the recording cannot be played with (RTSP 457 Invalid Range)."""


def play_options(
    headers: Headers, cseq: int, *, recording_start_ns: int, resume_ns: int
) -> PlayOptions:
    """The PLAY's options. Without a Range the playback resumes at ``resume_ns`` (where a
    PAUSE stopped it, else the recording's start). ``ValueError`` for a malformed header
    (400), :class:`InvalidRange` for a range that runs against Scale (457)."""
    scale = parse_scale(headers.get("Scale", "1.0"))
    reverse = scale < 0
    start_ns, end_ns = resume_ns, None
    value = headers.get("Range")
    if value is not None:
        found = parse_range(value)
        if isinstance(found, ClockRange):
            start_ns = found.start_wall_ns if found.start_wall_ns is not None else resume_ns
            end_ns = found.end_wall_ns
        elif isinstance(found, NptRange) and not found.now:
            if found.start_ns is not None:
                start_ns = recording_start_ns + found.start_ns
            if found.end_ns is not None:
                end_ns = recording_start_ns + found.end_ns
    if end_ns is not None and (end_ns < start_ns if not reverse else end_ns > start_ns):
        raise InvalidRange("Range runs against the direction of Scale")
    frames = parse_frames(headers.get("Frames", "all"))
    intra = frames.mode == "intra"
    request = PlayRequest(
        start_ns,
        end_ns,
        reverse=reverse,
        intra_only=intra,
        intra_spacing_ns=(frames.interval_ms or 0) * 1_000_000 if intra else 0,
        follow=end_ns is None and not reverse,
    )
    return PlayOptions(
        request,
        rate_control=parse_yes_no(headers.get("Rate-Control", "yes"), "Rate-Control"),
        scale=scale,
        immediate=parse_yes_no(headers.get("Immediate", "no"), "Immediate"),
        cseq=cseq,
    )


def replay_tracks(media: RecordingMedia) -> list[Track]:
    """The served tracks of a recording: the live tracks (``trackID=0`` video, ``1`` audio)
    with ``a=x-onvif-track:<track token>`` (§6.2)."""
    tracks = make_tracks(media.video, media.audio)
    for track in tracks:
        token = media.video_track if track.number == 0 else media.audio_track
        if token:
            track.media.attributes.append(("x-onvif-track", token))
    return tracks


#: (track number, is RTCP, packet bytes), as ``replay/live.py`` hands packets to viewers.
Packet = tuple[int, bool, bytes]


class ReplaySender:
    """The RTP side of one replay session, across its PLAYs."""

    def __init__(self, tracks: list[Track]) -> None:
        self.tracks = tracks
        self._by_number = {t.number: t for t in tracks}
        self._options: PlayOptions | None = None
        #: Playback-time anchor: (capture time, monotonic time) of the PLAY's first unit.
        self._anchor: tuple[int, int] | None = None
        self._skipped_ns = 0
        self._discontinuity = False
        self._now_at_play = 0

    def play(self, options: PlayOptions, now_ns: int, *, jumped: bool | None = None) -> None:
        """A PLAY took effect at monotonic ``now_ns``: its units come next. Its first unit
        gets D when the PLAY jumped: by default any PLAY after the first (``Immediate``, a
        new Range); the server passes ``jumped=False`` for a resume after PAUSE."""
        self._discontinuity = self._options is not None if jumped is None else jumped
        self._options = options
        self._anchor = None
        self._now_at_play = now_ns
        self._skipped_ns = 0

    def _playback_ns(self, wall_ns: int) -> int:
        """Nanoseconds of playback time since the PLAY's first unit."""
        assert self._options is not None and self._anchor is not None
        elapsed = wall_ns - self._anchor[0]
        elapsed += -self._skipped_ns if elapsed >= 0 else self._skipped_ns
        return int(elapsed / self._options.scale)

    @staticmethod
    def _render_first(unit: ReplayUnit) -> int:
        """The capture time of what a player renders first of the unit's group: the unit
        itself forward, the last unit of its GOP backward."""
        end = unit.group_end_ns
        return end if end is not None else unit.timed.wall_ns

    def _anchor_on(self, unit: ReplayUnit) -> None:
        if self._anchor is None:
            self._anchor = (self._render_first(unit), self._now_at_play)

    def due_ns(self, unit: ReplayUnit) -> int | None:
        """The monotonic time to send ``unit`` at with rate control (None: at once).
        Backward a whole GOP is due when its first picture to be shown — its last — is."""
        if self._options is None or not self._options.rate_control:
            return None
        self._anchor_on(unit)
        assert self._anchor is not None
        return self._anchor[1] + self._playback_ns(self._render_first(unit))

    def gap(self, gap: Gap) -> None:
        """Playback time does not wait through a hole in the recording."""
        self._skipped_ns += abs(gap.resume_ns - gap.end_ns)

    def rtptime(self, track: Track, unit: ReplayUnit) -> int:
        assert self._options is not None
        if self._options.rate_control:
            self._anchor_on(unit)
            ticks = self._playback_ns(unit.timed.wall_ns) * track.clock_rate // 1_000_000_000
        else:
            ticks = unit.timed.wall_ns * track.clock_rate // 1_000_000_000
        return (track.base_rtptime + ticks) & 0xFFFFFFFF

    def packets(self, unit: ReplayUnit) -> list[Packet]:
        """The unit's RTP packets (none for a track not served, or a unit the packetizer
        refuses: the stream goes on)."""
        options = self._options
        track = self._by_number.get(unit.timed.track)
        if options is None or track is None:
            return []
        rtptime = self.rtptime(track, unit)
        try:
            payloads = track.packetizer.packetize(unit.timed.unit, rtptime)
        except ValueError:
            return []
        if not payloads:
            return []
        extension = onvif_ext.pack(
            unit.timed.wall_ns,
            clean_point=unit.clean_point,
            end=unit.section_end,
            discontinuity=unit.discontinuity or self._discontinuity,
            terminal=unit.terminal,
            cseq=options.cseq,
        )
        self._discontinuity = False
        out: list[Packet] = []
        pt, seq, ssrc = track.payload_type, track.next_seq, track.ssrc
        for n, (payload, marker) in enumerate(payloads):
            second = pt | 0x80 if marker else pt
            if n == 0:
                header = _RTP.pack(0x90, second, seq, rtptime, ssrc) + extension
            else:
                header = _RTP.pack(0x80, second, seq, rtptime, ssrc)
            out.append((track.number, False, header + payload))
            seq = (seq + 1) & 0xFFFF
            track.octets += len(payload)
        track.packets += len(payloads)
        track.next_seq = seq
        track.last = (unit.timed.wall_ns, rtptime)
        return out

    def sender_report(self, track: Track, wall_ns: int, now_ns: int) -> bytes:
        """A sender report for ``track`` (§6.8): with rate control the current wall time
        and the RTP time playback has reached; without, both zero."""
        ntp = rtptime = 0
        options = self._options
        if options is not None and options.rate_control and self._anchor is not None:
            ntp = wall_ns_to_ntp(wall_ns)
            ticks = (now_ns - self._anchor[1]) * track.clock_rate // 1_000_000_000
            rtptime = (track.base_rtptime + ticks) & 0xFFFFFFFF
        report = SenderReport(
            track.ssrc, ntp, rtptime, track.packets & 0xFFFFFFFF, track.octets & 0xFFFFFFFF
        )
        return build_compound(report)
