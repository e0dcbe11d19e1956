"""Sending RTP/RTCP datagrams to unicast viewers with as few system calls as the kernel allows.

A video frame's RTP packets are mostly of one size (every fragment of a NAL unit but its
last is full), so consecutive packets to one address usually form a run of equal-size
datagrams with at most a shorter one at the end. On Linux such a run goes out in one
``sendmsg`` with UDP generic segmentation offload (``UDP_SEGMENT``): the kernel cuts the
buffer into the datagrams, the same ones ``sendto`` would have sent one by one. Where GSO is
refused (an old kernel, a device path without it), the writer says so once and sends each
datagram with ``sendto`` from then on.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import sys
from collections.abc import Iterable

log = logging.getLogger(__name__)

#: ``UDP_SEGMENT`` from linux/udp.h (Python names it from 3.12 on some builds only).
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
#: The kernel's limits for one GSO send: segments, and bytes of payload in all.
MAX_SEGMENTS = 64
MAX_BYTES = 65_000
#: Errors that mean "no GSO here" rather than "this datagram could not go".
_NO_GSO = {errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EIO}

Address = tuple[str, int]


class DatagramWriter:
    """Writes datagrams on one non-blocking UDP socket; a full socket buffer loses the
    datagrams of that call for that address (UDP is lossy), never blocks."""

    def __init__(self, sock: socket.socket, *, gso: bool | None = None) -> None:
        self._sock = sock
        self.gso = sys.platform == "linux" if gso is None else gso
        #: Datagrams dropped because the socket buffer was full.
        self.dropped = 0

    def send(self, datagrams: Iterable[tuple[bytes, Address]]) -> None:
        """Send each ``(datagram, address)`` in order."""
        if not self.gso:
            for datagram, address in datagrams:
                self._sendto(datagram, address)
            return
        run: list[bytes] = []
        run_address: Address | None = None
        size = total = 0
        for datagram, address in datagrams:
            n = len(datagram)
            if (
                run
                and size > 0
                and address == run_address
                and n <= size
                and len(run[-1]) == size  # a shorter datagram ends its run
                and len(run) < MAX_SEGMENTS
                and total + n <= MAX_BYTES
            ):
                run.append(datagram)
                total += n
                continue
            if run:
                self._send_run(run, run_address, size)  # type: ignore[arg-type]
            run, run_address, size, total = [datagram], address, n, n
        if run:
            self._send_run(run, run_address, size)  # type: ignore[arg-type]

    def _send_run(self, run: list[bytes], address: Address, size: int) -> None:
        if len(run) == 1 or not self.gso:
            for datagram in run:
                self._sendto(datagram, address)
            return
        try:
            self._sock.sendmsg(
                run, [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, address
            )
        except (BlockingIOError, InterruptedError):
            self.dropped += len(run)
        except OSError as exc:
            if exc.errno not in _NO_GSO:
                log.debug("UDP send to %s failed: %s", address, exc)
                return
            log.info("UDP segmentation offload refused (%s): one send per datagram", exc)
            self.gso = False
            for datagram in run:
                self._sendto(datagram, address)

    def _sendto(self, datagram: bytes, address: Address) -> None:
        try:
            self._sock.sendto(datagram, address)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError as exc:
            log.debug("UDP send to %s failed: %s", address, exc)
