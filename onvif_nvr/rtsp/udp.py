"""The UDP side of RTP/AVP unicast ingest (RFC 3550 §11, RFC 2326 §12.39): the client's
RTP/RTCP socket pair, the datagram protocol that hands their packets over, and the small
packets that open a NAT or firewall path towards the camera.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any

from onvif_nvr.rtsp.rtp import SDES_CNAME, ReceiverReport, SourceDescription, build_compound

#: Kernel receive buffer asked for on the RTP socket: a 4 Mbit/s stream bursts a whole
#: keyframe (hundreds of datagrams) at once, and a busy loop must not make the kernel drop.
RTP_RECEIVE_BUFFER = 4 << 20
RTCP_RECEIVE_BUFFER = 1 << 16
_PAIR_ATTEMPTS = 32

Address = tuple[Any, ...]


class PortPairError(OSError):
    """No even/odd pair of UDP ports could be bound."""


def bind_pair(local: Address) -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on ``local``'s address (a ``getsockname()`` tuple; its port is
    ignored): RTP on an even port, RTCP on the next one (RFC 3550 §11)."""
    family = socket.AF_INET6 if ":" in str(local[0]) else socket.AF_INET
    for _ in range(_PAIR_ATTEMPTS):
        rtp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtp.bind((local[0], 0, *local[2:]))
            port = rtp.getsockname()[1]
            if port % 2 == 0:
                rtcp = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    rtcp.bind((local[0], port + 1, *local[2:]))
                except OSError:
                    rtcp.close()
                else:
                    _receive_buffer(rtp, RTP_RECEIVE_BUFFER)
                    _receive_buffer(rtcp, RTCP_RECEIVE_BUFFER)
                    rtp.setblocking(False)
                    rtcp.setblocking(False)
                    return rtp, rtcp
        except OSError:
            rtp.close()
            raise
        rtp.close()
    raise PortPairError(f"no free even/odd UDP port pair after {_PAIR_ATTEMPTS} attempts")


def _receive_buffer(sock: socket.socket, size: int) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class Datagrams(asyncio.DatagramProtocol):
    """Hands every datagram of one socket to ``on_datagram(data, addr)``."""

    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.datagram_received = on_datagram  # type: ignore[assignment,method-assign]

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for a punch packet or a report: nothing to do; a camera
        # that really is gone shows as a stall or a closed RTSP connection.
        pass


_RTP_HEADER = struct.Struct(">BBHII")


def punch_rtp(payload_type: int, ssrc: int) -> bytes:
    """An empty RTP packet (header only) for the camera's RTP port."""
    return _RTP_HEADER.pack(0x80, payload_type & 0x7F, 0, 0, ssrc)


def punch_rtcp(ssrc: int, cname: bytes) -> bytes:
    """An empty receiver report (RR + SDES) for the camera's RTCP port."""
    return build_compound(
        ReceiverReport(ssrc, []), SourceDescription([(ssrc, [(SDES_CNAME, cname)])])
    )
