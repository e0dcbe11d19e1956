"""Recorded footage as fragmented MP4 for a browser's Media Source Extensions: the stored
fragments themselves, on one media timeline that maps to wall-clock time.

A request names a wall-clock window ``[start, start + duration)``. What is served (see
docs/design/mse.md):

* the init segment of the first segment file (stored bytes), then every stored ``moof`` +
  ``mdat`` from the last sync fragment at or before ``start`` (``start`` in a gap: the next
  recorded fragment) up to, not including, the first fragment starting at or after the
  window's end — each as stored, except each track's ``tfdt``, set so that media time
  ``t`` is wall time ``origin + t``: a fragment's decode time is its indexed wall-clock
  start minus ``origin``. Gaps in the recording stay gaps in media time, and successive
  windows asked with the same ``origin`` land on one timeline;
* a segment file whose tracks differ from the previous one's (codec parameters changed)
  is preceded by its own init segment.

The plan — which fragments, the origin, where the window really starts and ends — comes
from the index alone, in one database call, before the first byte is sent (the response
headers carry it). Files are then read at the rows' byte offsets on worker threads, a few
fragments per ``pread``, never a whole segment; a segment file gone under the reader
(retention) ends the stream at the last whole fragment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import struct
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from sqlalchemy import select

from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.errors import NoRecording
from onvif_nvr.mp4.boxes import TrackSpec
from onvif_nvr.mp4.reader import fragment_header, iter_boxes, read_init
from onvif_nvr.replay.reader import pread_exact
from onvif_nvr.rtsp import h264, h265

log = logging.getLogger(__name__)

NS_PER_MS = 1_000_000
#: Bytes read per ``pread`` (several 1 s fragments of a 4 Mbit/s stream).
READ_BYTES = 1 << 20
#: Enough of a fragment for its ``moof`` and the ``mdat`` header (~1 s of samples).
HEAD_BYTES = 16 << 10
_READABLE = ("writing", "closed")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


class NoData(Exception):
    """Nothing is recorded in the window."""


class OriginTooLate(ValueError):
    """The first fragment served starts before the asked origin (media time would be
    negative)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Fragment:
    segment: int
    start_wall_ns: int
    end_wall_ns: int
    offset: int
    size: int
    sync: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _Segment:
    id: int
    path: Path
    init_size: int


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What a window's answer holds, decided from the index before any byte is sent."""

    segments: dict[int, _Segment]
    fragments: list[_Fragment]
    #: Wall-clock time of media time 0, whole milliseconds (``X-Wall-Origin-Ms``).
    origin_ms: int
    init: bytes
    tracks: list[TrackSpec]

    @property
    def origin_ns(self) -> int:
        return self.origin_ms * NS_PER_MS

    @property
    def first_frame_ms(self) -> int:
        return self.fragments[0].start_wall_ns // NS_PER_MS

    @property
    def end_ms(self) -> int:
        """Where the last fragment ends, rounded up: asked as the next window's start, it
        selects the fragment after the last one served (never one served again)."""
        return -(-self.fragments[-1].end_wall_ns // NS_PER_MS)

    @property
    def content_type(self) -> str:
        return f'video/mp4; codecs="{codecs(self.tracks)}"'


def codecs(tracks: Sequence[TrackSpec]) -> str:
    """The RFC 6381 ``codecs`` list of an init segment's tracks."""
    out = []
    for track in tracks:
        config = track.sample_entry_config
        if track.codec == "H264":
            sps, pps, _ = h264.parse_avcc(config)
            out.append(h264.video_parameters(sps[0], pps).codec_string)
        elif track.codec == "H265":
            arrays, _ = h265.parse_hvcc(config)
            vps, sps, pps = (arrays.get(t, []) for t in (32, 33, 34))
            out.append(h265.video_parameters(vps, sps, pps).codec_string)
        elif track.codec == "AAC":
            object_type = config[0] >> 3 if config else 2
            out.append(f"mp4a.40.{object_type}")
        elif track.codec == "OPUS":
            out.append("opus")
        elif track.codec == "PCMU":
            out.append("ulaw")
        elif track.codec == "PCMA":
            out.append("alaw")
    return ", ".join(out)


# -- the plan (database worker) ----------------------------------------------------------------
_S = models.Segment
_F = models.Fragment


def _plan_rows(
    db: Database, token: str, start_ns: int, end_ns: int
) -> tuple[dict[int, _Segment], list[_Fragment]]:
    with db.session() as session:
        recording_id = session.scalar(
            select(models.Recording.id).where(models.Recording.token == token)
        )
        if recording_id is None:
            raise NoRecording(f"no recording {token!r}")
        base = (
            select(_S.id, _S.start_wall_ns, _S.init_size, _S.camera_id, models.Volume.path)
            .join(models.Volume, models.Volume.id == _S.volume_id)
            .where(_S.recording_id == recording_id, _S.state.in_(_READABLE))
        )
        first = session.execute(
            base.where(_S.start_wall_ns <= start_ns)
            .order_by(_S.start_wall_ns.desc(), _S.id.desc())
            .limit(1)
        ).first()
        later = base.where(_S.start_wall_ns < end_ns).order_by(_S.start_wall_ns, _S.id)
        if first is not None:
            later = later.where(_S.start_wall_ns >= first[1])
        rows = list(session.execute(later))
        segments: dict[int, _Segment] = {}
        order: list[int] = []
        for sid, _, init_size, camera_id, volume in rows:
            segments[sid] = _Segment(sid, Path(volume) / str(camera_id) / f"{sid}.mp4", init_size)
            order.append(sid)
        if not order:
            return segments, []
        fragments = session.execute(
            select(
                _F.segment_id,
                _F.seq,
                _F.start_wall_ns,
                _F.duration_90k,
                _F.offset,
                _F.size,
                _F.first_is_sync,
            )  # fmt: skip
            .where(_F.segment_id.in_(order), _F.start_wall_ns < end_ns)
            .order_by(_F.segment_id, _F.seq)
        ).all()
    by_segment: dict[int, list[_Fragment]] = {sid: [] for sid in order}
    for sid, _, start, duration_90k, offset, size, sync in fragments:
        end = start + duration_90k * 10**9 // 90_000
        by_segment[sid].append(_Fragment(sid, start, end, offset, size, bool(sync)))
    return segments, [f for sid in order for f in by_segment[sid]]


def _window(fragments: list[_Fragment], start_ns: int, end_ns: int) -> list[_Fragment]:
    """The fragments served for ``[start_ns, end_ns)`` out of those of the candidate
    segments (in recorded order)."""
    at = -1
    for i, fragment in enumerate(fragments):
        if fragment.start_wall_ns <= start_ns:
            at = i
        else:
            break
    if at < 0 or fragments[at].end_wall_ns <= start_ns:
        at += 1  # start lies in a gap: the next recorded fragment
    if at >= len(fragments) or fragments[at].start_wall_ns >= end_ns:
        raise NoData("nothing recorded in the window")
    first = at
    while first > 0 and not fragments[first].sync:
        if fragments[first - 1].segment != fragments[first].segment:
            break  # a segment starts at a keyframe
        first -= 1
    last = at
    while last + 1 < len(fragments) and fragments[last + 1].start_wall_ns < end_ns:
        last += 1
    return fragments[first : last + 1]


async def plan(
    db: Database, token: str, start_ns: int, duration_ns: int, origin_ns: int | None
) -> Plan:
    """The answer for a window; :class:`NoRecording`, :class:`NoData`, :class:`OriginTooLate`."""
    end_ns = start_ns + duration_ns
    segments, candidates = await db.run(_plan_rows, db, token, start_ns, end_ns)
    served = _window(candidates, start_ns, end_ns)
    first = served[0]
    if origin_ns is not None and first.start_wall_ns < origin_ns // NS_PER_MS * NS_PER_MS:
        raise OriginTooLate(
            f"the first fragment served starts at {first.start_wall_ns // NS_PER_MS} ms, "
            f"before the origin ({origin_ns // NS_PER_MS} ms)"
        )
    try:
        init, tracks, lead_ns = await asyncio.to_thread(_head, segments[first.segment], first)
    except (OSError, ValueError, struct.error) as exc:
        log.debug("mse playback: segment %s unreadable: %s", first.segment, exc)
        raise NoData("the recording's file is gone") from None
    if origin_ns is None:
        # Audio recorded a little before the first picture must not land before media
        # time 0 (it would be clamped there, out of step with the video).
        origin_ns = first.start_wall_ns - lead_ns
    used = {f.segment for f in served}
    return Plan(
        {sid: s for sid, s in segments.items() if sid in used},
        served,
        origin_ns // NS_PER_MS,
        init,
        tracks,
    )


# -- reading (worker threads) ------------------------------------------------------------------
def _head(segment: _Segment, first: _Fragment) -> tuple[bytes, list[TrackSpec], int]:
    """The first file's init segment, its tracks, and how long before the first fragment's
    video its other tracks start (ns, 0 when they do not), from that fragment's ``moof``."""
    fd, init = _open(segment)
    try:
        tracks = read_init(init)
        video = _video(tracks)
        if len(tracks) == 1:
            return init, tracks, 0
        head = pread_exact(fd, min(first.size, HEAD_BYTES), first.offset)
    finally:
        os.close(fd)
    runs = {run.track_id: run for run in fragment_header(head).tracks}
    if video.track_id not in runs:
        raise ValueError("the first fragment has no video")
    video_ns = runs[video.track_id].base_decode_time * 10**9 // video.timescale
    lead = 0
    for track in tracks:
        run = runs.get(track.track_id)
        if run is not None and track is not video:
            lead = max(lead, video_ns - run.base_decode_time * 10**9 // track.timescale)
    return init, tracks, lead


def _open(segment: _Segment) -> tuple[int, bytes]:
    fd = os.open(segment.path, os.O_RDONLY)
    try:
        if segment.init_size <= 0:
            raise ValueError(f"segment {segment.id} has no init segment indexed")
        return fd, pread_exact(fd, segment.init_size, 0)
    except BaseException:
        os.close(fd)
        raise


def retime(
    fragment: bytearray | memoryview,
    video_track_id: int,
    decode_time: int,
    timescales: dict[int, int],
) -> None:
    """Set the ``tfdt`` of each track of a stored ``moof`` + ``mdat`` in place: the video
    track's to ``decode_time`` (its own timescale), the others shifted by as much as the
    video moved (in their own timescales), so the tracks keep their recorded alignment."""
    moof = next(iter_boxes(fragment, 0, len(fragment)))
    if moof.type != "moof":
        raise ValueError(f"expected a 'moof' box, found {moof.type!r}")
    tfdts: list[tuple[int, int, int, int]] = []  # (track_id, old, offset, version)
    for traf in iter_boxes(fragment, moof.payload_offset, moof.end):
        if traf.type != "traf":
            continue
        track_id = 0
        for child in iter_boxes(fragment, traf.payload_offset, traf.end):
            if child.type == "tfhd":
                (track_id,) = _U32.unpack_from(fragment, child.payload_offset + 4)
            elif child.type == "tfdt":
                version = fragment[child.payload_offset]
                at = child.payload_offset + 4
                old = (_U64 if version == 1 else _U32).unpack_from(fragment, at)[0]
                tfdts.append((track_id, old, at, version))
    video = next((t for t in tfdts if t[0] == video_track_id), None)
    if video is None:
        raise ValueError(f"fragment has no traf of track {video_track_id}")
    video_scale = timescales[video_track_id]
    shift = decode_time - video[1]  # in the video's timescale
    for track_id, old, at, version in tfdts:
        if track_id == video_track_id:
            new = decode_time
        else:
            new = old + shift * timescales.get(track_id, video_scale) // video_scale
        codec = _U64 if version == 1 else _U32
        limit = (1 << 64) - 1 if version == 1 else 0xFFFF_FFFF
        codec.pack_into(fragment, at, min(max(new, 0), limit))


def _read_run(
    fd: int, run: list[_Fragment], origin_ns: int, video: TrackSpec, timescales: dict[int, int]
) -> tuple[list[memoryview], str | None]:
    """The run's fragments read in one ``pread`` and retimed (a worker thread's job): each
    one's media time is its wall time since the origin, in the video's timescale. A fragment
    that does not parse ends the list (with the reason)."""
    start = run[0].offset
    data = bytearray(pread_exact(fd, run[-1].offset + run[-1].size - start, start))
    view = memoryview(data)
    out: list[memoryview] = []
    for fragment in run:
        piece = view[fragment.offset - start : fragment.offset - start + fragment.size]
        decode_time = (fragment.start_wall_ns - origin_ns) * video.timescale // 10**9
        try:
            retime(piece, video.track_id, decode_time, timescales)
        except (ValueError, struct.error) as exc:
            return out, str(exc)
        out.append(piece)
    return out, None


def _open_segment(segment: _Segment) -> tuple[int, bytes, list[TrackSpec], TrackSpec]:
    fd, init = _open(segment)
    try:
        specs = read_init(init)
        return fd, init, specs, _video(specs)
    except BaseException:
        os.close(fd)
        raise


def _runs(fragments: list[_Fragment]) -> list[list[_Fragment]]:
    """Consecutive fragments of one segment lying back to back, at most READ_BYTES each
    (a larger fragment is a run of its own)."""
    runs: list[list[_Fragment]] = []
    for fragment in fragments:
        run = runs[-1] if runs else None
        if (
            run is not None
            and run[-1].segment == fragment.segment
            and run[-1].offset + run[-1].size == fragment.offset
            and fragment.offset + fragment.size - run[0].offset <= READ_BYTES
        ):
            run.append(fragment)
        else:
            runs.append([fragment])
    return runs


def _video(tracks: Sequence[TrackSpec]) -> TrackSpec:
    video = next((t for t in tracks if t.kind == "video"), None)
    if video is None:
        raise ValueError("the segment has no video track")
    return video


async def stream(plan: Plan) -> AsyncIterator[bytes | memoryview]:
    """The answer's body: init segment, then each fragment retimed (and a new init segment
    where a file's tracks change). Ends early, at a whole fragment, when a file is gone."""
    yield plan.init
    tracks = plan.tracks
    fd: int | None = None
    current: int | None = None
    try:
        for run in _runs(plan.fragments):
            sid = run[0].segment
            if sid != current or fd is None:
                if fd is not None:
                    os.close(fd)
                    fd = None
                try:
                    fd, init, specs, video = await asyncio.to_thread(
                        _open_segment, plan.segments[sid]
                    )
                except (OSError, ValueError) as exc:
                    log.info("mse playback: segment %s gone while served: %s", sid, exc)
                    return
                current = sid
                timescales = {t.track_id: t.timescale for t in specs}
                if specs != tracks:
                    tracks = specs
                    yield init
            assert fd is not None
            try:
                pieces, error = await asyncio.to_thread(
                    _read_run, fd, run, plan.origin_ns, video, timescales
                )
            except (OSError, ValueError) as exc:
                log.info("mse playback: segment %s unreadable while served: %s", sid, exc)
                return
            for piece in pieces:
                yield piece
            if error is not None:
                log.info("mse playback: fragment of segment %s unreadable: %s", sid, error)
                return
    finally:
        if fd is not None:
            os.close(fd)
