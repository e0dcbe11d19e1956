"""UDP viewers get exactly the datagrams ``sendto`` would have sent, in order, whether the
writer groups runs with UDP segmentation offload or sends them one by one."""

from __future__ import annotations

import socket

import pytest

from onvif_nvr.replay.datagrams import MAX_SEGMENTS, DatagramWriter


def _receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.settimeout(2)
    return sock


def _received(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65536) for _ in range(count)]


def _frame(tag: int, full: int, size: int = 1400, last: int = 517) -> list[bytes]:
    """A frame's packets: ``full`` full-size ones then a shorter last one."""
    packets = [bytes([tag, i % 256]) * (size // 2) for i in range(full)]
    return [*packets, bytes([tag, 255]) * (last // 2) + b"x"]


@pytest.mark.parametrize("gso", [True, False])
def test_runs_to_several_viewers_arrive_as_sent(gso: bool) -> None:
    a, b = _receiver(), _receiver()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        writer = DatagramWriter(sender, gso=gso)
        to_a = [*_frame(1, 150), *_frame(2, 3), b"rtcp-sr" * 4, *_frame(3, 0)]
        to_b = [*_frame(4, MAX_SEGMENTS + 5), b"tiny", b"tiny", *_frame(5, 10, size=1000)]
        # Interleaved the way a batch for two viewers is not, and per viewer as the fan-out
        # sends (one viewer's packets in a row): both must come out the same.
        batch = [(p, a.getsockname()) for p in to_a] + [(p, b.getsockname()) for p in to_b]
        batch += [(p, a.getsockname()) for p in _frame(6, 2)]
        writer.send(batch)
        assert _received(a, len(to_a) + 3) == [*to_a, *_frame(6, 2)]
        assert _received(b, len(to_b)) == to_b
        assert writer.dropped == 0
    finally:
        for sock in (a, b, sender):
            sock.close()


def test_equal_sizes_after_a_short_datagram_start_a_new_run() -> None:
    """A run is equal-size datagrams and at most one shorter at its end; what follows a
    shorter one (even at the run's size) goes in the next run, never merged across it."""
    receiver = _receiver()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packets = [b"a" * 800, b"b" * 800, b"c" * 300, b"d" * 800, b"e" * 800, b"f" * 900]
        DatagramWriter(sender).send((p, receiver.getsockname()) for p in packets)
        assert _received(receiver, len(packets)) == packets
    finally:
        receiver.close()
        sender.close()


def test_a_refused_offload_falls_back_to_one_send_each() -> None:
    """A socket on which the kernel refuses GSO (here: UDP checksums turned off with
    SO_NO_CHECK, which segmentation needs) makes the writer fall back for good and still
    deliver everything."""
    receiver = _receiver()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_NO_CHECK", 11), 1)
        writer = DatagramWriter(sender, gso=True)
        packets = [b"a" * 700, b"b" * 700, b"c" * 10]
        writer.send((p, receiver.getsockname()) for p in packets)
        assert _received(receiver, 3) == packets
        assert writer.gso is False
        more = [b"z" * 500] * 3
        writer.send((p, receiver.getsockname()) for p in more)
        assert _received(receiver, 3) == more
    finally:
        receiver.close()
        sender.close()


def test_empty_datagrams_are_never_grouped() -> None:
    receiver = _receiver()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        DatagramWriter(sender).send((b"", receiver.getsockname()) for _ in range(3))
        assert _received(receiver, 3) == [b"", b"", b""]
    finally:
        receiver.close()
        sender.close()
