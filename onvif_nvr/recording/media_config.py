"""Media configurations and profiles as values: what the Media and Media2 services describe.

The box re-streams what its cameras send and never transcodes on that path, so the
configurations *describe* the real streams (codec and resolution from the parameter sets,
frame rate, bit rate and keyframe interval measured by the hub's meters) and a change that
would need an encoder answers ``ter:ConfigModify`` (:func:`check_proposal`). Pure: the
state is built from the receivers, their stream facts and the stored rows
(:func:`build_state`); :mod:`onvif_nvr.recording.media_profiles` keeps it. See
docs/design/media.md.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Iterable, Mapping
from typing import Any

from onvif_nvr.errors import ActionFailed, InvalidArgument, NvrError
from onvif_nvr.media.units import AudioParameters, VideoParameters
from onvif_nvr.recording.profile_g import Receiver
from onvif_nvr.recording.supervisor import CameraRecorder

VIDEO_SOURCE = "VideoSource"
AUDIO_SOURCE = "AudioSource"
VIDEO_ENCODER = "VideoEncoder"
AUDIO_ENCODER = "AudioEncoder"
METADATA = "Metadata"
#: Configuration kinds, in the order a profile lists them; the names are Media2's
#: ``tr2:ConfigurationEnumeration`` values.
KINDS = (VIDEO_SOURCE, AUDIO_SOURCE, VIDEO_ENCODER, AUDIO_ENCODER, METADATA)
#: A kind that needs another in the same profile (Media2 §5.3.1 dependencies).
DEPENDS_ON = {VIDEO_ENCODER: VIDEO_SOURCE, AUDIO_ENCODER: AUDIO_SOURCE}

METADATA_TOKEN = "METADATA"
#: Profiles the box holds in all (fixed and created): GetServiceCapabilities'
#: MaximumNumberOfProfiles.
MAX_PROFILES = 256
#: The frame rate of the on-demand JPEG stream (RFC 2435) of every channel.
JPEG_FRAME_RATE = 5.0
#: What a configuration reports as its quality: the box does not encode, so it is fixed.
QUALITY = 5.0
#: Session timeout of the RTSP server (``timeout=60``), reported by encoder configurations.
SESSION_TIMEOUT_S = 60

_H264_PROFILES = {66: "Baseline", 77: "Main", 88: "Extended", 100: "High"}
_H265_PROFILES = {1: "Main", 2: "Main10", 3: "MainStillPicture"}


# -- faults of the media services ---------------------------------------------------------------
class NoProfile(InvalidArgument):
    def __init__(self, token: str) -> None:
        super().__init__(f"no media profile {token!r}", "NoProfile")


class NoConfig(InvalidArgument):
    def __init__(self, message: str) -> None:
        super().__init__(message, "NoConfig")


class NoSource(InvalidArgument):
    def __init__(self, token: str) -> None:
        super().__init__(f"no source {token!r}", "NoSource")


class ConfigModify(InvalidArgument):
    """A configuration change the box cannot honour (it would need transcoding)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "ConfigModify")


class ProfileExists(InvalidArgument):
    def __init__(self, token: str) -> None:
        super().__init__(f"a profile {token!r} exists already", "ProfileExists")


class InvalidStreamSetup(InvalidArgument):
    def __init__(self, message: str) -> None:
        super().__init__(message, "InvalidStreamSetup")


class InvalidMulticastSettings(InvalidArgument):
    def __init__(self, message: str) -> None:
        super().__init__(message, "InvalidMulticastSettings")


class ConfigurationConflict(ActionFailed):
    def __init__(self, message: str) -> None:
        super().__init__(message, "ConfigurationConflict")


class IncompleteConfiguration(ActionFailed):
    def __init__(self, message: str) -> None:
        super().__init__(message, "IncompleteConfiguration")


class MaxProfiles(ActionFailed):
    def __init__(self) -> None:
        super().__init__(f"the box holds at most {MAX_PROFILES} profiles", "MaxNVTProfiles")


class DeletionOfFixedProfile(NvrError):
    """``env:Sender/ter:Action/ter:DeletionOfFixedProfile`` (the spec's code: Sender, Action)."""

    side = "Sender"
    subcodes = ("Action", "DeletionOfFixedProfile")


# -- the objects ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Multicast:
    address: str
    port: int
    ttl: int = 1
    auto_start: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Multicast:
        return cls(
            str(value["address"]),
            int(value["port"]),
            int(value.get("ttl", 1)),
            bool(value.get("auto_start", False)),
        )

    def check(self) -> Multicast:
        """This setting, or ConfigModify saying what is wrong with it."""
        try:
            address = ipaddress.ip_address(self.address)
        except ValueError:
            raise ConfigModify(f"multicast address {self.address!r} is not an IP address") from None
        if not address.is_multicast and not address.is_unspecified:
            raise ConfigModify(f"{self.address} is not a multicast address")
        if not 0 <= self.port <= 65535 or self.port % 2:
            raise ConfigModify(f"multicast port {self.port} is not an even port number")
        if not 0 <= self.ttl <= 255:
            raise ConfigModify(f"multicast TTL {self.ttl} is out of range 0..255")
        return self


@dataclasses.dataclass(frozen=True)
class StreamFacts:
    """What is known of a receiver's live stream now."""

    video: VideoParameters | None = None
    audio: AudioParameters | None = None
    frame_rate: float | None = None
    bitrate_kbps: int | None = None
    gov_length: int | None = None
    audio_bitrate_kbps: int | None = None

    @classmethod
    def of(cls, recorder: CameraRecorder | None) -> StreamFacts:
        info = recorder.source_info if recorder is not None else None
        if recorder is None or info is None:
            return cls()
        video_meter = recorder.hub.meters.get(0)
        audio_meter = recorder.hub.meters.get(1)
        rate = info.video.frame_rate if info.video is not None else None
        if not rate and video_meter is not None and video_meter.rate:
            rate = _steady(video_meter.rate)
        return cls(
            video=info.video,
            audio=info.audio,
            frame_rate=rate or None,
            bitrate_kbps=_kbps(video_meter.peak_bitrate_bps if video_meter else None),
            gov_length=video_meter.gov_length if video_meter else None,
            audio_bitrate_kbps=_kbps(audio_meter.peak_bitrate_bps if audio_meter else None),
        )


def _steady(rate: float) -> float:
    """A measured frame rate as the configurations report it: the nearest whole rate when
    it is that within measuring noise (29.97 -> 30), else to a tenth, so that reads a few
    seconds apart agree."""
    whole = round(rate)
    return float(whole) if abs(rate - whole) < 0.15 else round(rate, 1)


def _kbps(bps: int | None) -> int | None:
    # Rounded up to 64 kbit/s steps, so that a client's read-modify-write sees a stable figure.
    return None if not bps else int(math.ceil(bps / 64_000) * 64)


@dataclasses.dataclass(frozen=True)
class Source:
    """One receiver as a media channel."""

    receiver: Receiver
    facts: StreamFacts

    @property
    def index(self) -> int:
        return self.receiver.id

    @property
    def name(self) -> str:
        return self.receiver.name or self.receiver.token


@dataclasses.dataclass(frozen=True)
class Configuration:
    """A media configuration of any kind (the fields of the other kinds stay empty)."""

    kind: str
    token: str
    name: str
    #: The receiver token whose stream it belongs to ("" for the metadata configuration).
    receiver: str = ""
    use_count: int = 0
    #: Video/audio source configurations: the source token, and the video bounds.
    source_token: str = ""
    width: int = 0
    height: int = 0
    #: Encoders: H264, H265, JPEG; AAC, PCMU, PCMA, OPUS.
    encoding: str = ""
    frame_rate: float = 0.0
    bitrate_kbps: int = 0
    gov_length: int = 0
    #: H.264/H.265 profile name (Baseline, Main, High...; Main10).
    profile: str = ""
    quality: float = QUALITY
    sample_rate: int = 0
    channels: int = 0
    multicast: Multicast | None = None

    @property
    def jpeg(self) -> bool:
        return self.encoding == "JPEG"


@dataclasses.dataclass(frozen=True)
class Profile:
    token: str
    name: str
    fixed: bool
    #: Kind -> the configuration it holds (only the kinds it has).
    configurations: Mapping[str, Configuration]

    @property
    def receiver(self) -> str:
        """The receiver whose stream this profile plays ("" when it has no source)."""
        for config in self.configurations.values():
            if config.receiver:
                return config.receiver
        return ""

    @property
    def jpeg(self) -> bool:
        encoder = self.configurations.get(VIDEO_ENCODER)
        return encoder is not None and encoder.jpeg

    def stream_path(self) -> str:
        """The live RTSP path of this profile's stream, or IncompleteConfiguration."""
        if VIDEO_SOURCE not in self.configurations and AUDIO_SOURCE not in self.configurations:
            raise IncompleteConfiguration(f"profile {self.token} has no source configuration")
        if VIDEO_ENCODER not in self.configurations and AUDIO_ENCODER not in self.configurations:
            raise IncompleteConfiguration(f"profile {self.token} has no encoder configuration")
        path = f"/live/{self.receiver}"
        return path + "/jpeg" if self.jpeg else path

    def multicast_source(self) -> Configuration:
        """The configuration whose multicast settings the profile's stream uses (its video
        encoder's, else its audio encoder's)."""
        for kind in (VIDEO_ENCODER, AUDIO_ENCODER):
            config = self.configurations.get(kind)
            if config is not None and config.multicast is not None:
                return config
        raise IncompleteConfiguration(f"profile {self.token} has no encoder configuration")

    def multicast(self) -> Multicast:
        """The multicast group of the profile's stream."""
        config = self.multicast_source()
        assert config.multicast is not None
        if ipaddress.ip_address(config.multicast.address).is_unspecified:
            raise InvalidMulticastSettings(f"{config.token} has no multicast address")
        return config.multicast

    def multicast_audio_port(self) -> int | None:
        """The audio port on the profile's group: its audio encoder's when that one sends
        to the same group as the video (None: the server's default, video port + 2)."""
        source, audio = self.multicast_source(), self.configurations.get(AUDIO_ENCODER)
        if audio is None or audio is source or audio.multicast is None:
            return None
        return audio_port_on(self.multicast(), audio.multicast)


@dataclasses.dataclass(frozen=True)
class MediaState:
    """Everything the media services answer from, built at once (a consistent view)."""

    sources: tuple[Source, ...]
    configurations: Mapping[str, Configuration]
    profiles: tuple[Profile, ...]

    def profile(self, token: str) -> Profile:
        for profile in self.profiles:
            if profile.token == token:
                return profile
        raise NoProfile(token)

    def of_kind(self, kind: str) -> list[Configuration]:
        return [c for c in self.configurations.values() if c.kind == kind]

    def configuration(self, kind: str, token: str) -> Configuration:
        config = self.configurations.get(token)
        if config is None or config.kind != kind:
            raise NoConfig(f"no {kind} configuration {token!r}")
        return config

    def compatible(self, profile: Profile, kind: str) -> list[Configuration]:
        """The configurations of ``kind`` that may join ``profile`` (same stream)."""
        receiver = profile.receiver
        return [c for c in self.of_kind(kind) if not receiver or c.receiver in ("", receiver)]

    def source(self, token: str) -> Source:
        """A source by its video or audio source token (``VS_<i>``, ``AS_<i>``)."""
        for source in self.sources:
            if token in (f"VS_{source.index}", f"AS_{source.index}"):
                return source
        raise NoSource(token)


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A Set*Configuration request in domain terms (None: not given, so unchanged)."""

    name: str | None = None
    source_token: str | None = None
    bounds: tuple[int, int, int, int] | None = None
    encoding: str | None = None
    resolution: tuple[int, int] | None = None
    frame_rate: float | None = None
    bitrate_kbps: int | None = None
    gov_length: int | None = None
    profile: str | None = None
    quality: float | None = None
    #: kHz, as both media services give it.
    sample_rate_khz: int | None = None
    multicast: Multicast | None = None
    analytics: bool | None = None


# -- building the state -------------------------------------------------------------------------
def video_profile_name(video: VideoParameters) -> str:
    """The H.264 / H.265 profile in the stream's SPS (``""`` when unknown)."""
    sps = next((p for p in video.parameter_sets if p and _nal_type(video.codec, p) in (7, 33)), b"")
    if video.codec == "H264" and len(sps) > 1:
        return _H264_PROFILES.get(sps[1], "High")
    if video.codec == "H265" and len(sps) > 3:
        return _H265_PROFILES.get(sps[3] & 0x1F, "Main")
    return ""


def _nal_type(codec: str, nal: bytes) -> int:
    return nal[0] & 0x1F if codec == "H264" else (nal[0] >> 1) & 0x3F


def audio_port_on(group: Multicast, audio: Multicast | None) -> int | None:
    """The audio encoder's port when it sends to ``group`` (one group carries a stream)."""
    return audio.port if audio is not None and audio.address == group.address else None


def default_multicast(index: int, slot: int) -> Multicast:
    """A group per receiver (239.255.x.y, administratively scoped), ports by stream."""
    return Multicast(f"239.255.{(index >> 8) & 0xFF}.{index & 0xFF}", 50000 + 2 * slot, 1)


def source_configurations(source: Source) -> list[Configuration]:
    """The configurations a receiver's stream offers, before stored settings apply."""
    i, facts, token = source.index, source.facts, source.receiver.token
    video, audio = facts.video, facts.audio
    width, height = (video.width, video.height) if video is not None else (0, 0)
    out = [
        Configuration(
            VIDEO_SOURCE,
            f"VSC_{i}",
            f"{source.name} video",
            token,
            source_token=f"VS_{i}",
            width=width,
            height=height,
        )
    ]
    if video is not None:
        out.append(
            Configuration(
                VIDEO_ENCODER,
                f"VEC_{i}",
                f"{source.name} {video.codec}",
                token,
                encoding=video.codec,
                width=width,
                height=height,
                frame_rate=facts.frame_rate or 0.0,
                bitrate_kbps=facts.bitrate_kbps or 0,
                gov_length=facts.gov_length or 0,
                profile=video_profile_name(video),
                multicast=default_multicast(i, 0),
            )
        )
        out.append(
            Configuration(
                VIDEO_ENCODER,
                f"VEC_{i}_JPEG",
                f"{source.name} JPEG",
                token,
                encoding="JPEG",
                width=width,
                height=height,
                frame_rate=JPEG_FRAME_RATE,
                multicast=default_multicast(i, 2),
            )
        )
    if audio is not None:
        out.append(
            Configuration(
                AUDIO_SOURCE,
                f"ASC_{i}",
                f"{source.name} audio",
                token,
                source_token=f"AS_{i}",
                channels=audio.channels,
            )
        )
        bitrate = {"PCMU": 64, "PCMA": 64}.get(audio.codec, facts.audio_bitrate_kbps or 0)
        out.append(
            Configuration(
                AUDIO_ENCODER,
                f"AEC_{i}",
                f"{source.name} {audio.codec}",
                token,
                encoding=audio.codec,
                bitrate_kbps=bitrate,
                sample_rate=audio.sample_rate,
                channels=audio.channels,
                multicast=default_multicast(i, 1),
            )
        )
    return out


def fixed_profiles(source: Source) -> list[tuple[str, str, dict[str, str]]]:
    """``(token, name, configurations)`` of a receiver's two ready-to-use profiles."""
    i = source.index
    main = {
        VIDEO_SOURCE: f"VSC_{i}",
        VIDEO_ENCODER: f"VEC_{i}",
        AUDIO_SOURCE: f"ASC_{i}",
        AUDIO_ENCODER: f"AEC_{i}",
    }
    jpeg = {VIDEO_SOURCE: f"VSC_{i}", VIDEO_ENCODER: f"VEC_{i}_JPEG"}
    return [
        (f"PROFILE_{i}", f"{source.name} main", main),
        (f"PROFILE_{i}_JPEG", f"{source.name} JPEG", jpeg),
    ]


def build_state(
    sources: Iterable[Source],
    profile_rows: Iterable[tuple[str, str, bool, Mapping[str, str]]],
    settings: Mapping[str, Mapping[str, Any]],
) -> MediaState:
    """The state from the sources and the stored rows: ``profile_rows`` as ``(token, name,
    fixed, {kind: token})``, ``settings`` by configuration token. A stored reference to a
    configuration the stream does not offer now (no audio yet) is left out of the answer,
    not forgotten."""
    sources = tuple(sources)
    base = [c for s in sources for c in source_configurations(s)]
    base.append(
        Configuration(
            METADATA, METADATA_TOKEN, "Metadata", multicast=Multicast("239.255.254.1", 50000, 1)
        )
    )
    rows = list(profile_rows)
    counts: dict[str, int] = {}
    for _, _, _, refs in rows:
        for token in refs.values():
            counts[token] = counts.get(token, 0) + 1
    configurations: dict[str, Configuration] = {}
    for config in base:
        stored = settings.get(config.token, {})
        multicast = stored.get("multicast")
        configurations[config.token] = dataclasses.replace(
            config,
            name=str(stored.get("name") or config.name),
            use_count=counts.get(config.token, 0),
            multicast=Multicast.from_json(multicast) if multicast else config.multicast,
        )
    profiles = []
    for token, name, fixed, refs in rows:
        held = {
            kind: configurations[ref]
            for kind, ref in sorted(refs.items(), key=lambda item: KINDS.index(item[0]))
            if ref in configurations and configurations[ref].kind == kind
        }
        profiles.append(Profile(token, name, fixed, held))
    return MediaState(sources, configurations, tuple(profiles))


def check_profile(state: MediaState, refs: Mapping[str, str]) -> None:
    """ConfigurationConflict unless a profile holding ``refs`` is consistent: one stream,
    and every encoder with its source."""
    receivers = {
        state.configurations[t].receiver
        for t in refs.values()
        if t in state.configurations and state.configurations[t].receiver
    }
    if len(receivers) > 1:
        raise ConfigurationConflict(
            f"the configurations belong to different streams ({', '.join(sorted(receivers))})"
        )
    for kind, needed in DEPENDS_ON.items():
        if kind in refs and needed not in refs:
            raise ConfigurationConflict(f"a {kind} configuration needs a {needed} configuration")


#: tt:Name and tt:ReferenceToken are at most 64 characters (the schema's restriction,
#: which the request parser does not enforce).
MAX_NAME = 64


def check_name(value: str | None, what: str = "Name") -> None:
    if value is not None and len(value) > MAX_NAME:
        raise InvalidArgument(f"{what} is longer than {MAX_NAME} characters")


def check_proposal(current: Configuration, proposal: Proposal) -> None:
    """ConfigModify naming the first thing the box cannot do without transcoding."""
    c, p = current, proposal
    check_name(p.name)
    what = f"{c.token} describes the stream as it comes from the camera"
    if p.source_token is not None and p.source_token != c.source_token:
        raise ConfigModify(f"{c.token} belongs to source {c.source_token}")
    if p.bounds is not None and p.bounds != (0, 0, c.width, c.height):
        raise ConfigModify(f"{what}: bounds are 0,0,{c.width},{c.height} (no cropping)")
    if p.encoding is not None and p.encoding.upper() != c.encoding.upper():
        raise ConfigModify(f"{what}: encoding {c.encoding} (no transcoding)")
    if p.resolution is not None and p.resolution != (c.width, c.height):
        raise ConfigModify(f"{what}: resolution {c.width}x{c.height} (no scaling)")
    if p.frame_rate is not None and c.frame_rate and p.frame_rate + 0.5 < c.frame_rate:
        raise ConfigModify(f"{what}: {c.frame_rate:g} frames/s (a lower limit needs transcoding)")
    if p.bitrate_kbps is not None and c.bitrate_kbps and p.bitrate_kbps * 4 < c.bitrate_kbps * 3:
        raise ConfigModify(
            f"{what}: about {c.bitrate_kbps} kbit/s (a lower limit needs transcoding)"
        )
    if p.gov_length is not None and c.gov_length and p.gov_length != c.gov_length:
        raise ConfigModify(f"{what}: a keyframe every {c.gov_length} frames")
    if p.profile is not None and c.profile and p.profile != c.profile:
        raise ConfigModify(f"{what}: profile {c.profile}")
    if p.quality is not None and abs(p.quality - c.quality) > 0.01:
        raise ConfigModify(f"{what}: quality {c.quality:g} (fixed)")
    if (
        p.sample_rate_khz is not None
        and c.sample_rate
        and p.sample_rate_khz != c.sample_rate // 1000
    ):
        raise ConfigModify(f"{what}: {c.sample_rate} Hz")
    if p.analytics:
        raise ConfigModify("the box streams no analytics metadata")
