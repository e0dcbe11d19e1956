"""``storage.fsync``: with "interval" a fragment's row is indexed only once its bytes were
fsynced (every ``fsync_interval_s``, the first fragment of a segment, and the segment's end),
so the index never points at bytes a power cut could lose; "fragment" indexes each at once."""

from __future__ import annotations

import os

import pytest

from onvif_nvr.clock import ManualClock
from onvif_nvr.recording import writer as writer_module
from onvif_nvr.recording.recovery import check_volume
from onvif_nvr.recording.writer import SegmentWriter
from tests.test_writer_audio import env, video_units  # noqa: F401  (the fixture)

S = 10**9


class Counting:
    """Counts the writer's fsyncs (the real os.fsync still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = os.fsync

        def fsync(fd: int) -> None:
            self.calls += 1
            real(fd)

        monkeypatch.setattr(writer_module.os, "fsync", fsync)


async def feed(env, policy: str, clock: ManualClock, fragments_per_tick: int = 1):  # noqa: F811
    _, index, cam, volume_id, volume = env
    writer = SegmentWriter(
        cam, volume_id, volume, index, fsync=policy, fsync_interval_s=3.0, clock=clock
    )
    await writer._in_io(os.makedirs, writer.directory, 0o755, True)
    indexed: list[int] = []  # rows in the index after each fragment (keyframe every 10)
    for i, unit in enumerate(video_units(100)):
        await writer.add(unit)
        if i % 10 == 9:
            clock.advance(1.0)  # a fragment per second of wall time
            segments = await index.segments(cam)
            rows = [len(await index.fragments(s.id)) for s in segments]
            indexed.append(sum(rows))
    return writer, indexed


async def test_interval_indexes_fragments_once_durable(env, monkeypatch):  # noqa: F811
    fsyncs = Counting(monkeypatch)
    clock = ManualClock()
    writer, indexed = await feed(env, "interval", clock)
    # Fragment 1 is synced (a segment's first); then every 3 s: rows come in steps.
    assert indexed[:8] == [0, 1, 1, 1, 4, 4, 4, 7]
    await writer.finish()
    writer._io.shutdown(wait=True)
    db, index, cam, volume_id, volume = env
    [segment] = await index.segments(cam)
    assert segment.state == "closed" and segment.fragment_count == 10
    assert len(await index.fragments(segment.id)) == 10
    report = await check_volume(index, volume_id, volume)
    assert not report.problems
    # The first fragment (file and directory), every third after, and the end.
    assert fsyncs.calls < 10


async def test_fragment_policy_indexes_each_fragment(env, monkeypatch):  # noqa: F811
    fsyncs = Counting(monkeypatch)
    writer, indexed = await feed(env, "fragment", ManualClock())
    assert indexed[:8] == [0, 1, 2, 3, 4, 5, 6, 7]  # each fragment when the next begins
    await writer.finish()
    writer._io.shutdown(wait=True)
    assert fsyncs.calls >= 10


async def test_unknown_policy_is_refused(env):  # noqa: F811
    _, index, cam, volume_id, volume = env
    with pytest.raises(ValueError, match="fsync policy"):
        SegmentWriter(cam, volume_id, volume, index, fsync="sometimes")
