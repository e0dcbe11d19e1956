"""The ingest's fast lane gives exactly the results of the general path.

``BaseDepacketizer.feed_view`` (FU continuations appended in place from the receive buffer)
against ``feed``, and ``MessageParser``'s frame sink against its ``Interleaved`` messages, on
clean streams and on streams with loss, duplicates, reordering, foreign fragments and junk.
"""

from __future__ import annotations

import random

import pytest

from onvif_nvr.media.units import AccessUnit
from onvif_nvr.rtsp import h264, h265
from onvif_nvr.rtsp.bits import BaseDepacketizer
from onvif_nvr.rtsp.message import Headers, Interleaved, MessageParser, Request, Response
from onvif_nvr.rtsp.rtp import RtpPacket, SequenceTracker
from tests import mediagen
from tests.test_h264 import Packet, to_packets

CODECS = {
    "H264": (h264.H264Packetizer, h264.H264Depacketizer, h264.split_annexb),
    "H265": (h265.H265Packetizer, h265.H265Depacketizer, h265.split_annexb),
}


@pytest.fixture(scope="module", params=sorted(CODECS))
def stream(request: pytest.FixtureRequest) -> tuple[str, list[Packet]]:
    codec = request.param
    data = (
        mediagen.h264_annexb(320, 240, frames=20, fps=25, gop=10)
        if codec == "H264"
        else mediagen.h265_annexb(320, 240, frames=20, fps=25, gop=10)
    )
    packetizer, _, split = CODECS[codec]
    fmt = "h264" if codec == "H264" else "hevc"
    units = [(split(au), key) for au, key in mediagen.access_units(data, fmt)]
    return codec, to_packets(packetizer(96, 1, mtu=180), units, codec=codec)


def perturb(packets: list[Packet], seed: int) -> list[Packet]:
    """Loss, duplicates, swaps, truncation and foreign bytes, reproducibly."""
    rng = random.Random(seed)
    out: list[Packet] = []
    for payload, ts, marker, seq in packets:
        roll = rng.random()
        if roll < 0.03:
            continue  # lost
        if roll < 0.06:
            out.append((payload, ts, marker, seq))  # duplicated
        elif roll < 0.08 and out:
            out.insert(len(out) - 1, (payload, ts, marker, seq))  # reordered
            continue
        elif roll < 0.10:
            payload = payload[: rng.randrange(0, 4)]  # truncated
        elif roll < 0.12:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif roll < 0.14 and len(payload) > 3:
            payload = payload[:1] + bytes([payload[1] ^ 0x1F]) + payload[2:]  # other NAL type
        out.append((payload, ts, marker, seq))
    return out


def results(dep: BaseDepacketizer, aus: list[AccessUnit]) -> tuple[object, ...]:
    return (
        [(au.payloads, au.rtp_timestamp, au.keyframe, au.damaged) for au in aus],
        dep.packets,
        dep.dropped,
        dep.lost,
        dep.unsupported,
        dep.damaged_units,
    )


@pytest.mark.parametrize("seed", [None, 1, 2, 3, 4, 5])
def test_feed_view_equals_feed(stream: tuple[str, list[Packet]], seed: int | None) -> None:
    codec, packets = stream
    if seed is not None:
        packets = perturb(packets, seed)
    _, depacketizer, _ = CODECS[codec]
    general, fast = depacketizer(), depacketizer()
    general_units: list[AccessUnit] = []
    fast_units: list[AccessUnit] = []
    buffer = bytearray()
    for payload, ts, marker, seq in packets:
        general_units.extend(general.feed(payload, ts, marker, seq))
        start = len(buffer) + 7  # somewhere inside a receive buffer, as the client has it
        buffer += b"\xee" * 7 + payload + b"\xee" * 5
        with memoryview(buffer) as view:
            fast_units.extend(fast.feed_view(view, start, start + len(payload), ts, marker, seq))
    general_units += general.flush()
    fast_units += fast.flush()
    assert results(fast, fast_units) == results(general, general_units)
    if seed is None:
        assert general.dropped == 0 and len(general_units) == 20


def frames_and_messages(chunks: list[bytes], sink: bool) -> list[object]:
    got: list[object] = []

    def take(buf: bytearray, pos: int, limit: int) -> int:
        while limit - pos >= 4 and buf[pos] == 0x24:
            end = pos + 4 + int.from_bytes(buf[pos + 2 : pos + 4], "big")
            if end > limit:
                break
            got.append(("frame", buf[pos + 1], bytes(buf[pos + 4 : end])))
            pos = end
        return pos

    parser = MessageParser("client", frame_sink=take if sink else None)
    for chunk in chunks:
        for message in parser.feed(chunk):
            if isinstance(message, Interleaved):
                got.append(("frame", message.channel, message.payload))
            else:
                got.append(bytes(message))
    return got


def test_frame_sink_sees_what_interleaved_messages_carry() -> None:
    rng = random.Random(7)
    parts: list[bytes] = []
    for i in range(200):
        if i % 37 == 5:
            parts.append(bytes(Response(200, "OK", Headers({"CSeq": str(i)}))))
        elif i % 53 == 9:
            parts.append(bytes(Request("GET_PARAMETER", "rtsp://cam/", Headers({"CSeq": str(i)}))))
        else:
            size = rng.choice([0, 1, 12, 500, 1400])
            parts.append(bytes(Interleaved(rng.randrange(4), rng.randbytes(size))))
    data = b"".join(parts)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(data)), 40))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        plain = frames_and_messages(chunks, sink=False)
        fast = frames_and_messages(chunks, sink=True)
        # Frames reach the sink during feed(), text messages come in feed()'s result: the
        # order between the two kinds may differ, the order within each may not.
        for kind in (tuple, bytes):
            assert [m for m in fast if isinstance(m, kind)] == [
                m for m in plain if isinstance(m, kind)
            ]
        assert len(plain) == len(fast) == 200


def interleave(packets: list[Packet], seed: int) -> bytes:
    """The packets as RTP over RTSP/TCP on channel 0, with RTCP-like frames on channel 1
    now and then, and now and then a packet with a CSRC (not plain)."""
    rng = random.Random(seed)
    frames = []
    for payload, ts, marker, seq in packets:
        first = 0x80
        csrc = b""
        if rng.random() < 0.02:
            first, csrc = 0x81, b"\x00\x00\x00\x07"
        header = bytes([first, (0x80 if marker else 0) | 96]) + seq.to_bytes(2, "big")
        rtp = header + ts.to_bytes(4, "big") + (1234).to_bytes(4, "big") + csrc + payload
        frames.append(bytes(Interleaved(0, rtp)))
        if rng.random() < 0.03:
            frames.append(bytes(Interleaved(1, b"\x80\xc8" + bytes(26))))
    return b"".join(frames)


@pytest.mark.parametrize("seed", [None, 11, 12, 13])
def test_interleaved_runs_equal_feed(stream: tuple[str, list[Packet]], seed: int | None) -> None:
    codec, packets = stream
    if seed is not None:
        packets = perturb(packets, seed)
    _, depacketizer, _ = CODECS[codec]
    general, fast = depacketizer(), depacketizer()
    general_units: list[AccessUnit] = []
    fast_units: list[AccessUnit] = []
    for payload, ts, marker, seq in packets:
        general_units.extend(general.feed(payload, ts, marker, seq))
    general_units += general.flush()
    data = interleave(packets, seed or 0)
    runs = 0
    tracker = SequenceTracker(probation=0)
    with memoryview(data) as view:
        pos = 0
        while pos < len(data):
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            end = pos + 4 + length
            if data[pos + 1] == 0 and data[pos + 4] == 0x80:
                new, count, ssrc = fast.feed_interleaved_run(view, pos, len(data), 0, 96)
                if count:
                    assert ssrc == 1234
                    runs += count
                    tracker.advance(count, fast.last_sequence_number or 0)
                    pos = new
                    continue
                second = data[pos + 5]
                seq = int.from_bytes(data[pos + 6 : pos + 8], "big")
                ts = int.from_bytes(data[pos + 8 : pos + 12], "big")
                fast_units.extend(fast.feed_view(view, pos + 16, end, ts, second > 0x7F, seq))
                tracker.update(seq)
            elif data[pos + 1] == 0:  # the general parser's path, as the client has it
                packet = RtpPacket.parse(data[pos + 4 : end])
                fast_units.extend(
                    fast.feed(
                        packet.payload, packet.timestamp, packet.marker, packet.sequence_number
                    )
                )
                tracker.update(packet.sequence_number)
            pos = end
    fast_units += fast.flush()
    assert results(fast, fast_units) == results(general, general_units)
    assert runs > len(packets) // (3 if seed is None else 10)  # many packets took the run
    reference = SequenceTracker(probation=0)
    for _, _, _, seq in packets:
        reference.update(seq)
    if seed is None:
        assert (tracker.received, tracker.extended_highest_sequence) == (
            reference.received,
            reference.extended_highest_sequence,
        )


def test_sequence_tracker_advance_equals_updates() -> None:
    for start in (65_530, 100):
        bulk, single = SequenceTracker(probation=0), SequenceTracker(probation=0)
        for tracker in (bulk, single):
            tracker.update(start)
        for i in range(1, 21):
            single.update((start + i) & 0xFFFF)
        bulk.advance(20, (start + 20) & 0xFFFF)
        assert vars(bulk) == vars(single)
    fresh, reference = SequenceTracker(), SequenceTracker()  # on probation: one by one
    fresh.advance(3, 12)
    for seq in (10, 11, 12):
        reference.update(seq)
    assert vars(fresh) == vars(reference)
