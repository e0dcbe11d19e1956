"""Audio access units to RTP payloads: AAC (RFC 3640 AAC-hbr), G.711 (RFC 3551), Opus
(RFC 7587).

The counterpart of the depacketizers in ``client.py``; plain functions over bytes, no I/O.
Each packetizer returns (payload, marker) pairs like the video packetizers.
"""

from __future__ import annotations

from onvif_nvr.media.units import AccessUnit

#: AAC-hbr: 13-bit AU-size + 3-bit AU-Index per AU-header (sizelength=13;indexlength=3).
_AAC_MAX_AU = (1 << 13) - 1


class AudioPacketizer:
    """One audio frame per RTP packet (AAC frames larger than ``mtu`` are fragmented as RFC
    3640 §3.2.3 allows: every fragment repeats the AU-header with the whole AU's size, the
    marker is on the last one)."""

    def __init__(self, codec: str, mtu: int = 1400) -> None:
        if codec not in ("AAC", "PCMU", "PCMA", "OPUS"):
            raise ValueError(f"unsupported audio codec {codec!r}")
        if mtu < 16:
            raise ValueError(f"MTU {mtu} too small")
        self.codec = codec
        self.mtu = mtu

    def packetize(self, au: AccessUnit, rtp_timestamp: int) -> list[tuple[bytes, bool]]:
        """Return the (payload, marker) pairs of one audio frame."""
        frame = b"".join(au.payloads)
        if not frame:
            return []
        if self.codec != "AAC":
            # G.711 and Opus frames go as they are; the marker starts a talkspurt, so none.
            return [(frame, False)]
        if len(frame) > _AAC_MAX_AU:
            raise ValueError(f"AAC frame of {len(frame)} bytes exceeds 13-bit AU-size")
        header = b"\x00\x10" + (len(frame) << 3).to_bytes(2, "big")
        room = self.mtu - len(header)
        chunks = [frame[i : i + room] for i in range(0, len(frame), room)]
        return [(header + chunk, i == len(chunks) - 1) for i, chunk in enumerate(chunks)]
