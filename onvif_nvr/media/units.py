"""Access units and codec parameters passed between the protocol modules, the ingest,
the hub, the segment writer and the RTSP server.

Time has one unit per meaning and the unit is in the name: ``rtp_timestamp`` is the
32-bit RTP clock of the stream (``clock_rate`` Hz, wraps), ``pts_90k``/``dts_90k`` are
unwrapped 90 kHz media times, ``wall_ns`` is nanoseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import dataclasses

VIDEO_CODECS = ("H264", "H265")
AUDIO_CODECS = ("AAC", "PCMU", "PCMA", "OPUS")


@dataclasses.dataclass(frozen=True, slots=True)
class AccessUnit:
    """One coded picture (video) or one audio frame.

    Video: ``payloads`` are the picture's NAL units, each without start code or length
    prefix, in decoding order. Audio: one element, the raw frame (an AAC access unit
    without ADTS header, G.711 samples, an Opus packet).
    """

    codec: str
    payloads: tuple[bytes, ...]
    rtp_timestamp: int
    #: IDR (H.264) / IRAP (H.265) picture; always True for audio frames.
    keyframe: bool
    #: Set by the depacketizer when packets of this unit were lost (the unit may be damaged).
    damaged: bool = False

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.payloads)


@dataclasses.dataclass(frozen=True, slots=True)
class VideoParameters:
    """What a decoder (and an MP4 sample entry) needs to know about a video stream."""

    codec: str  # "H264" or "H265"
    width: int
    height: int
    #: H.264: (SPS, PPS...); H.265: (VPS, SPS, PPS...). NAL units without start codes.
    parameter_sets: tuple[bytes, ...]
    #: "avc1.64001f" / "hvc1.1.6.L93.B0" style RFC 6381 codec string.
    codec_string: str = ""
    #: Nominal frame rate from the SPS VUI timing, if it carries one.
    frame_rate: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AudioParameters:
    codec: str  # "AAC", "PCMU", "PCMA", "OPUS"
    sample_rate: int
    channels: int
    #: AAC AudioSpecificConfig (from SDP fmtp config=), else b"".
    config: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class TimedUnit:
    """An access unit placed in time: what the ingest publishes and the writer, the RTSP
    server and snapshots consume."""

    unit: AccessUnit
    #: Track of the stream: 0 = video, 1 = audio, ...
    track: int
    #: Unwrapped media time of the stream, 90 kHz (audio converted from its clock).
    dts_90k: int
    #: Wall-clock capture time (RTCP-mapped or arrival-based; see docs/design/time.md).
    wall_ns: int


@dataclasses.dataclass
class SourceInfo:
    """What an ingest source learned about its stream (filled in as it starts)."""

    video: VideoParameters | None = None
    audio: AudioParameters | None = None
