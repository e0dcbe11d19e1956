"""The native RTSP client ingests from GStreamer's RTSP server (a real peer over loopback)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from onvif_nvr.clock import SystemClock
from onvif_nvr.media.units import TimedUnit
from onvif_nvr.recording.pyav_source import PyAVSource
from onvif_nvr.rtsp.client import (
    AacDeframer,
    RtspAuthError,
    RtspConnectionError,
    RtspSource,
    SourceInfo,
)
from tests import gstcam

CAMERA = ("--size", "320x240", "--fps", "25", "--gop", "10", "--audio")


async def _ingest(
    url: str, seconds: float, **kwargs: object
) -> tuple[RtspSource, SourceInfo, list[TimedUnit], list[int]]:
    units: list[TimedUnit] = []
    local_wall: list[int] = []  # local clock when each unit was delivered

    def on_units(batch: list[TimedUnit]) -> None:
        now = time.time_ns()
        units.extend(batch)
        local_wall.extend(now for _ in batch)

    source = RtspSource(url, clock=SystemClock(), on_units=on_units, **kwargs)  # type: ignore[arg-type]
    task = asyncio.ensure_future(source.run())
    await asyncio.sleep(seconds)
    assert not task.done(), task.exception()
    source.stop()
    started = time.monotonic()
    info = await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 2, "stop() ends run() promptly"
    return source, info, units, local_wall


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_ingests_video_and_audio(codec):
    with gstcam.camera("--codec", codec, *CAMERA) as url:
        source, info, units, local_wall = await _ingest(url, 6.0)
    video = [u for u in units if u.track == 0]
    audio = [u for u in units if u.track == 1]
    assert info.video is not None and (info.video.width, info.video.height) == (320, 240)
    assert info.video.codec == codec.upper()
    assert info.audio is not None and info.audio.codec == "AAC" and info.audio.config
    assert len(video) >= 100
    assert all(u.unit.codec == codec.upper() for u in video)
    keys = [i for i, u in enumerate(video) if u.unit.keyframe]
    # GOPs of 10 (the encoder's first GOP may be shorter).
    assert len(keys) >= 5 and all(b - a == 10 for a, b in zip(keys[1:], keys[2:], strict=False))
    dts = [u.dts_90k for u in video]
    assert {b - a for a, b in zip(dts, dts[1:], strict=False)} == {3600}  # 25 fps at 90 kHz
    walls = [u.wall_ns for u in video]
    assert walls == sorted(walls)
    # GStreamer sends its first SR within a few seconds; the tail of the stream is SR-mapped.
    assert all(abs(w - local) < 1e9 for w, local in zip(walls[-25:], local_wall[-25:], strict=True))
    assert len(audio) >= 100 and all(len(u.unit.payloads[0]) > 0 for u in audio)
    audio_dts = [u.dts_90k for u in audio]
    assert audio_dts == sorted(audio_dts)
    assert source.units == len(units) and source.packets >= len(units)
    assert source.bytes > 0 and source.lost == 0 and source.dropped == 0


async def test_packet_counts_match_pyav_on_the_same_camera():
    with gstcam.camera("--codec", "h264", *CAMERA) as url:
        pyav_units: list[TimedUnit] = []
        pyav = PyAVSource(url, clock=SystemClock(), on_units=pyav_units.extend)
        pyav_task = asyncio.ensure_future(pyav.run())
        source, _, units, _ = await _ingest(url, 4.0)
        pyav.stop()
        await asyncio.wait_for(pyav_task, 15)
    ours = len([u for u in units if u.track == 0])
    theirs = len([u for u in pyav_units if u.track == 0])
    # Both ran ~4 s on the same shared media; start-up times differ by well under a second.
    assert abs(ours - theirs) <= max(25, theirs // 10), (ours, theirs)


async def test_digest_auth():
    with gstcam.camera("--codec", "h264", *CAMERA, "--user", "u", "--password", "s3cret") as url:
        good = url.replace("rtsp://", "rtsp://u:s3cret@")
        _, info, units, _ = await _ingest(good, 2.0)
        assert info.video is not None and units
        bad = url.replace("rtsp://", "rtsp://u:wrong@")
        source = RtspSource(bad, clock=SystemClock(), on_units=lambda _: None)
        with pytest.raises(RtspAuthError, match="refused the credentials") as caught:
            await asyncio.wait_for(source.run(), 10)
        assert "wrong" not in str(caught.value) and caught.value.status == 401
        anonymous = RtspSource(url, clock=SystemClock(), on_units=lambda _: None)
        with pytest.raises(RtspAuthError, match="requires credentials"):
            await asyncio.wait_for(anonymous.run(), 10)


async def test_refused_connection_fails_fast():
    port = gstcam.free_port()
    source = RtspSource(f"rtsp://127.0.0.1:{port}/live", clock=SystemClock(), on_units=print)
    started = time.monotonic()
    with pytest.raises(RtspConnectionError, match="cannot connect"):
        await source.run()
    assert time.monotonic() - started < 2


async def test_silent_server_times_out():
    """A peer that accepts but never answers: the open timeout ends the session."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        source = RtspSource(
            f"rtsp://127.0.0.1:{port}/x", clock=SystemClock(), on_units=print, open_timeout_s=0.5
        )
        with pytest.raises(RtspConnectionError, match="no response to OPTIONS"):
            await asyncio.wait_for(source.run(), 5)


def test_unknown_transport_is_not_supported():
    """tcp, udp and http are native (tests/test_rtsp_transports.py); anything else is left
    to the PyAV fallback."""
    with pytest.raises(NotImplementedError, match="use backend=pyav"):
        RtspSource("rtsp://127.0.0.1/x", transport="sctp", clock=SystemClock(), on_units=print)


def test_aac_deframer_splits_several_aus_and_reassembles_fragments():
    deframer = AacDeframer(13, 3, 3)
    # Two AU headers (16 bits each): sizes 3 and 2, index/delta 0.
    headers = (32).to_bytes(2, "big") + (3 << 3).to_bytes(2, "big") + (2 << 3).to_bytes(2, "big")
    assert deframer.feed(headers + b"abcde", True) == [b"abc", b"de"]
    one = (16).to_bytes(2, "big") + (6 << 3).to_bytes(2, "big")
    assert deframer.feed(one + b"abc", False) == []
    assert deframer.feed(one + b"def", True) == [b"abcdef"]
    with pytest.raises(ValueError, match="AAC AU data is truncated"):
        deframer.feed(headers + b"abcd", True)
    with pytest.raises(ValueError, match="AAC payload has no AU-headers-length"):
        deframer.feed(b"\x00", True)


def test_read_batching_follows_the_stream_rate_and_live_viewers():
    """SO_RCVLOWAT is the rate of the last tick times the read latency (capped), 1 (read at
    once) for a stream that stalled or when someone watches live."""
    source = RtspSource("rtsp://127.0.0.1:1/x", clock=SystemClock(), on_units=lambda units: None)
    a, b = socket.socketpair()
    with a, b:
        source._socket = a

        def lowat() -> int:
            return a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)

        source._batch_reads(500_000, 1_000_000_000)  # 4 Mbit/s for 1 s: 0.1 s of it
        assert lowat() == 50_000
        source._batch_reads(50_000_000, 1_000_000_000)
        assert lowat() == 262_144
        source._batch_reads(0, 500_000_000)  # nothing came: the next bytes are read at once
        assert lowat() == 1
        source._batch_reads(500_000, 1_000_000_000)
        source.set_read_latency(0)  # a live viewer subscribed
        assert lowat() == 1
        source._batch_reads(500_000, 1_000_000_000)
        assert lowat() == 1
