"""The PyAV (FFmpeg) fallback ingest records from GStreamer's RTSP server without decoding."""

from __future__ import annotations

import asyncio

import pytest

from onvif_nvr.clock import SystemClock
from onvif_nvr.media.units import TimedUnit
from onvif_nvr.recording.hub import Hub
from onvif_nvr.recording.pyav_source import PyAVSource, has_slice, starts_picture
from onvif_nvr.rtsp.bits import split_annexb
from tests import gstcam


def test_split_annexb():
    data = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65\x88\x84"
    assert split_annexb(data) == [b"\x67\x42", b"\x68\xce", b"\x65\x88\x84"]
    assert split_annexb(b"\x65\x01") == [b"\x65\x01"]


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_records_units_with_keyframes_and_parameters(codec):
    with gstcam.camera(
        "--codec", codec, "--size", "320x240", "--fps", "25", "--gop", "10", "--audio"
    ) as url:
        hub = Hub("cam")
        recorder = hub.subscribe("recorder", maxsize=10_000, lossy=True)
        source = PyAVSource(
            url, clock=SystemClock(), on_units=lambda units: [hub.publish(u) for u in units]
        )
        task = asyncio.ensure_future(source.run())
        await asyncio.sleep(3.0)
        source.stop()
        info = await asyncio.wait_for(task, 15)
    hub.end()
    units: list[TimedUnit] = [u async for u in recorder]
    video = [u for u in units if u.track == 0]
    audio = [u for u in units if u.track == 1]
    assert info.video is not None and (info.video.width, info.video.height) == (320, 240)
    assert info.video.codec == codec.upper().replace("H265", "H265")
    assert len(video) >= 30
    assert audio, "the AAC track came through too"
    keys = [i for i, u in enumerate(video) if u.unit.keyframe]
    # GOPs of 10 (the encoder's first GOP may be shorter).
    assert len(keys) >= 3 and all(b - a == 10 for a, b in zip(keys[1:], keys[2:], strict=False))
    dts = [u.dts_90k for u in video]
    assert dts == sorted(dts) and dts[1] - dts[0] == 3600  # 25 fps at 90 kHz
    walls = [u.wall_ns for u in video]
    assert walls == sorted(walls)
    assert recorder.lost == 0
    # One picture per unit, the first one included (FFmpeg hands it over without timestamps;
    # it must not be merged into the next): exactly one first slice in each.
    video_codec = codec.upper()
    for u in video:
        slices = [n for n in u.unit.payloads if has_slice(video_codec, [n])]
        assert sum(starts_picture(video_codec, [n]) for n in slices) == 1, u.dts_90k


async def test_many_fallback_sources_run_at_once():
    """Each source has its own thread: more sources than the default executor's workers
    (cores + 4) all deliver units."""
    count = 8
    with gstcam.camera("--codec", "h264", "--size", "160x120", "--fps", "10", "--gop", "10") as url:
        seen = [0] * count
        sources = [
            PyAVSource(
                url,
                clock=SystemClock(),
                on_units=lambda units, i=i: seen.__setitem__(i, seen[i] + len(units)),
            )
            for i in range(count)
        ]
        tasks = [asyncio.ensure_future(s.run()) for s in sources]
        await asyncio.sleep(4.0)
        for source in sources:
            source.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert all(n > 0 for n in seen), seen
