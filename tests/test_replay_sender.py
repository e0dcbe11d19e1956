"""Replay as RTP (replay/sender.py): PLAY headers to a PlayRequest, and the footage of
tests/test_replay_reader.py as RTP packets read back with the project's RTP parser and
H.264 depacketizer — every field of the ONVIF replay extension checked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from onvif_nvr.clock import SystemClock
from onvif_nvr.replay.reader import Gap, PlayRequest, ReplayReader, ReplayUnit
from onvif_nvr.replay.sender import (
    InvalidRange,
    ReplaySender,
    play_options,
    replay_tracks,
)
from onvif_nvr.rtsp.h264 import H264Depacketizer
from onvif_nvr.rtsp.headers import FramesSpec, format_frames, parse_frames, parse_yes_no
from onvif_nvr.rtsp.message import Headers
from onvif_nvr.rtsp.onvif_ext import onvif_replay_extension
from onvif_nvr.rtsp.rtp import RtpPacket, ntp_to_wall_ns, parse_rtcp
from tests.test_replay_reader import B_START_NS, MS, T0, Footage, S, record

START = T0 - 3600 * S  # the recording's start as a player's npt=0 would name it


# -- headers -------------------------------------------------------------------------------------
def test_frames_header():
    assert parse_frames("intra") == FramesSpec("intra")
    assert parse_frames(" intra/4000 ") == FramesSpec("intra", 4000)
    assert parse_frames("Predicted") == FramesSpec("predicted")
    assert parse_frames("all") == FramesSpec()
    assert format_frames(FramesSpec("intra", 250)) == "intra/250"
    for bad in ("", "intra/", "all/100", "predicted/5", "i-frames", "intra/-1"):
        with pytest.raises(ValueError) as info:
            parse_frames(bad)
        assert str(info.value) == "Frames is invalid"
    assert parse_yes_no(" YES", "Rate-Control") is True and parse_yes_no("no", "Immediate") is False
    with pytest.raises(ValueError) as info:
        parse_yes_no("true", "Rate-Control")
    assert str(info.value) == "Rate-Control is invalid"


def options(cseq: int = 4, **fields: str):
    headers = Headers([(name.replace("_", "-"), value) for name, value in fields.items()])
    return play_options(headers, cseq, recording_start_ns=START, resume_ns=START + 5 * S)


def test_play_options():
    onvif = options(Range="clock=20270115T080000.250Z-", Rate_Control="no", Require="onvif-replay")
    assert onvif.request == PlayRequest(T0 + 250 * MS, follow=True)
    assert onvif.rate_control is False and onvif.scale == 1.0 and not onvif.immediate
    reverse = options(Range="clock=20270115T080010Z-20270115T080000Z", Scale="-1.0")
    assert reverse.request.reverse and reverse.request.end_ns == T0 and not reverse.request.follow
    assert reverse.request.start_ns == T0 + 10 * S
    intra = options(Frames="intra/4000", Immediate="yes")
    assert intra.request.intra_only and intra.request.intra_spacing_ns == 4000 * MS
    assert intra.immediate and intra.request.start_ns == START + 5 * S  # no Range: resume
    player = options(Range="npt=0.000-")
    assert player.request.start_ns == START and player.rate_control
    assert options(Frames="predicted").request.intra_only is False
    with pytest.raises(InvalidRange):
        options(Range="clock=20270115T080010Z-20270115T080000Z")  # backward range, Scale 1
    with pytest.raises(InvalidRange):
        options(Range="clock=20270115T080000Z-20270115T080010Z", Scale="-1")
    for bad in ({"Scale": "0"}, {"Rate_Control": "maybe"}, {"Range": "clock=2027-"}):
        with pytest.raises(ValueError):
            options(**bad)


# -- packets -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Footage]:
    recorded = asyncio.run(record(tmp_path_factory.mktemp("replay-sender")))
    yield recorded
    recorded.db.close()


async def send(footage: Footage, rate_control: bool = False, cseq: int = 0x1234, **headers):
    """(sender, [(item, packets, due_ns)]) of a whole playback."""
    r = ReplayReader(footage.db, SystemClock())
    media = await r.recording(footage.token)
    tracks = replay_tracks(media)
    sender = ReplaySender(tracks)
    opts = options(cseq, Rate_Control="yes" if rate_control else "no", **headers)
    sender.play(opts, now_ns=10**12)
    out = []
    async for item in r.play(media, opts.request):
        if isinstance(item, Gap):
            sender.gap(item)
            out.append((item, [], None))
        else:
            due = sender.due_ns(item)
            out.append((item, sender.packets(item), due))
    return sender, out


def test_describe_names_the_tracks(footage):
    async def describe():
        return replay_tracks(await ReplayReader(footage.db, SystemClock()).recording(footage.token))

    tracks = asyncio.run(describe())
    assert [t.control for t in tracks] == ["trackID=0", "trackID=1"]
    assert [("x-onvif-track", "VIDEO001") in t.media.attributes for t in tracks] == [True, False]
    assert ("x-onvif-track", "AUDIO001") in tracks[1].media.attributes


async def test_forward_without_rate_control(footage):
    sender, out = await send(footage, Range="clock=20270115T080000Z-20270115T080100Z")
    depacketizer = H264Depacketizer()
    seqs: dict[int, list[int]] = {0: [], 1: []}
    rebuilt = []
    for item, packets, due in out:
        if isinstance(item, Gap):
            continue
        assert due is None and packets
        parsed = [RtpPacket.parse(p) for _, rtcp, p in packets]
        ext = onvif_replay_extension(parsed[0])
        assert ext is not None and all(onvif_replay_extension(p) is None for p in parsed[1:])
        assert ntp_to_wall_ns(ext.ntp_timestamp) == pytest.approx(item.timed.wall_ns, abs=1)
        assert (ext.clean_point, ext.end, ext.discontinuity, ext.terminal) == (
            item.clean_point, item.section_end, False, item.terminal,
        )  # fmt: skip
        assert ext.cseq_low == 0x34
        track = sender.tracks[item.timed.track]
        ticks = item.timed.wall_ns * track.clock_rate // 10**9
        assert all(p.timestamp == (track.base_rtptime + ticks) & 0xFFFFFFFF for p in parsed)
        assert [p.marker for p in parsed] == [False] * (len(parsed) - 1) + [True]
        seqs[item.timed.track] += [p.sequence_number for p in parsed]
        if item.timed.track == 0:
            for p in parsed:
                rebuilt += depacketizer.feed(p.payload, p.timestamp, p.marker, p.sequence_number)
    for track, numbers in seqs.items():
        first = sender.tracks[track].next_seq - len(numbers)
        assert numbers == [(first + n) & 0xFFFF for n in range(len(numbers))]
    video = [i for i, _, _ in out if isinstance(i, ReplayUnit) and i.timed.track == 0]
    assert len(rebuilt) == len(video) == 200
    assert all(
        u.payloads[-1] == v.timed.unit.payloads[-1] for u, v in zip(rebuilt, video, strict=True)
    )
    ends = [i for i, _, _ in out if isinstance(i, ReplayUnit) and i.section_end]
    assert len(ends) == 4 and sum(i.terminal for i in ends) == 2


async def test_backward_without_rate_control(footage):
    sender, out = await send(footage, Range="clock=20270115T080010Z-20270115T080000Z", Scale="-1.0")
    firsts = []
    previous_seq = None
    for item, packets, _ in out:
        if isinstance(item, Gap):
            continue
        parsed = [RtpPacket.parse(p) for _, _, p in packets]
        for p in parsed:  # sequence numbers in delivery order
            assert previous_seq is None or p.sequence_number == (previous_seq + 1) & 0xFFFF
            previous_seq = p.sequence_number
        ext = onvif_replay_extension(parsed[0])
        assert ext is not None and ext.discontinuity == item.discontinuity
        if item.discontinuity:
            firsts.append(parsed[0].timestamp)
    assert len(firsts) == len([w for w in footage.keyframe_walls() if w <= T0 + 10 * S])
    assert firsts == sorted(firsts, reverse=True)  # the same RTP times as forward: decreasing


async def test_rate_control_paces_by_capture_time_and_skips_the_gap(footage):
    sender, out = await send(
        footage, rate_control=True, Range="clock=20270115T080004Z-20270115T080100Z"
    )
    units = [(i, d) for i, _, d in out if isinstance(i, ReplayUnit)]
    [gap] = [i for i, _, _ in out if isinstance(i, Gap)]
    start_due = units[0][1]
    assert start_due == 10**12
    for item, due in units:
        expected = item.timed.wall_ns - units[0][0].timed.wall_ns
        if item.timed.wall_ns >= T0 + B_START_NS:
            expected -= gap.resume_ns - gap.end_ns  # playback does not wait through the gap
        assert due - start_due == expected
    video = [(i, p) for i, p, _ in out if isinstance(i, ReplayUnit) and i.timed.track == 0]
    stamps = [RtpPacket.parse(p[0][2]).timestamp for _, p in video]
    steps = {(b - a) & 0xFFFFFFFF for a, b in zip(stamps, stamps[1:], strict=False)}
    assert steps <= {3600, 3600 + 3600}  # 25 fps; the gap costs at most a frame
    report = parse_rtcp(sender.sender_report(sender.tracks[0], T0, 10**12 + 2 * S))[0]
    assert report.ntp_timestamp != 0 and report.rtp_timestamp != 0


async def test_backward_with_rate_control_decreases_inside_a_gop(footage):
    _, out = await send(
        footage, rate_control=True, Range="clock=20270115T080003Z-20270115T080001Z", Scale="-2"
    )
    gops: list[list[tuple[int, int]]] = []
    for item, packets, due in out:
        if item.discontinuity:
            gops.append([])
        gops[-1].append((RtpPacket.parse(packets[0][2]).timestamp, due))
    assert len(gops) == 6  # the GOPs from 2.8 s back to 0.8 s
    dues = [due for gop in gops for _, due in gop]
    assert dues[0] == 10**12 and dues == sorted(dues)  # sent in order, each GOP at once
    assert all(len({due for _, due in gop}) == 1 for gop in gops)
    assert dues[-1] - dues[0] == (3000 - 1160) * MS // 2  # last pictures of the first/last GOP
    for gop in gops:  # shown backward: RTP times decrease inside a GOP...
        stamps = [stamp for stamp, _ in gop]
        assert stamps == sorted(stamps, reverse=True)
    assert [g[0][0] for g in gops] == sorted(g[0][0] for g in gops)  # ... and grow across


async def test_a_second_play_marks_a_discontinuity(footage):
    r = ReplayReader(footage.db, SystemClock())
    media = await r.recording(footage.token)
    sender = ReplaySender(replay_tracks(media))
    for n, when in enumerate(("20270115T080001Z-", "20270115T080009Z-")):
        opts = options(10 + n, Range=f"clock={when}", Rate_Control="no", Immediate="yes")
        sender.play(opts, 0)
        playback = r.play(media, opts.request)
        first = await anext(playback)
        second = await anext(playback)
        await playback.aclose()
        assert isinstance(first, ReplayUnit) and isinstance(second, ReplayUnit)
        ext = onvif_replay_extension(RtpPacket.parse(sender.packets(first)[0][2]))
        assert ext is not None and ext.discontinuity == (n == 1) and ext.cseq_low == 10 + n
        ext = onvif_replay_extension(RtpPacket.parse(sender.packets(second)[0][2]))
        assert ext is not None and not ext.discontinuity
    # A resume after PAUSE goes on where the data stopped: no D.
    sender.play(options(12, Rate_Control="no"), 0, jumped=False)
    playback = r.play(media, PlayRequest(T0 + 2 * S))
    first = await anext(playback)
    await playback.aclose()
    assert isinstance(first, ReplayUnit)
    ext = onvif_replay_extension(RtpPacket.parse(sender.packets(first)[0][2]))
    assert ext is not None and not ext.discontinuity and ext.cseq_low == 12
    zero = parse_rtcp(sender.sender_report(sender.tracks[0], T0, 5 * S))[0]
    assert (zero.ntp_timestamp, zero.rtp_timestamp) == (0, 0)  # no rate control: zeros
