"""Media service (trt, ver10): the receivers' live streams as media profiles (Profile S).

Translates the MediaBinding's operations to :mod:`onvif_nvr.recording.media_profiles` and
back. The value builders and the URI rules here are shared with the Media2 service
(:mod:`onvif_nvr.services.media2`): both present the same profiles and configurations.
"""

from __future__ import annotations

import datetime
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

from lxml import etree

from onvif_nvr.errors import ActionFailed, InvalidArgument, NvrError
from onvif_nvr.recording.media_config import (
    AUDIO_ENCODER,
    AUDIO_SOURCE,
    MAX_PROFILES,
    METADATA,
    QUALITY,
    SESSION_TIMEOUT_S,
    VIDEO_ENCODER,
    VIDEO_SOURCE,
    Configuration,
    IncompleteConfiguration,
    InvalidMulticastSettings,
    InvalidStreamSetup,
    MediaState,
    Multicast,
    NoSource,
    Profile,
    Proposal,
    Source,
)
from onvif_nvr.recording.media_profiles import MediaProfiles
from onvif_nvr.services.common import optional, render_service_capabilities
from onvif_nvr.soap.dispatch import CallContext, Handler
from onvif_nvr.wsdl.catalog import Binding

log = logging.getLogger(__name__)

#: Upper end of the bit rate ranges: any limit above the stream's rate is already met.
MAX_BITRATE_KBPS = 100_000
#: Encodings the ver10 schema can name (tt:VideoEncoding, tt:AudioEncoding).
VER10_VIDEO = {"H264": "H264", "JPEG": "JPEG"}
VER10_AUDIO = {"AAC": "AAC", "PCMU": "G711", "PCMA": "G711"}
#: Media2 names audio encodings by their RTP MIME subtype (Media2 §5.3.4).
AUDIO_MIME = {"AAC": "mpeg4-generic", "PCMU": "PCMU", "PCMA": "PCMA", "OPUS": "opus"}


class LiveStreams(Protocol):
    """What the media services ask of the RTSP server (``replay.rtsp_server.RtspServer``)."""

    @property
    def bound_port(self) -> int: ...

    def start_multicast(
        self, path: str, group: str, port: int, ttl: int, *, audio_port: int | None = None
    ) -> None: ...

    def stop_multicast(self, path: str) -> None: ...

    def synchronization_point(self, path: str) -> int: ...


# -- multicast without RTSP (StartMulticastStreaming, AutoStart) ----------------------------------
def start_group(
    live: LiveStreams, path: str, group: Multicast, audio_port: int | None = None
) -> None:
    try:
        live.start_multicast(path, group.address, group.port, group.ttl, audio_port=audio_port)
    except LookupError as exc:
        raise ActionFailed(f"cannot stream {path} now: {exc}") from None
    except ValueError as exc:
        raise InvalidMulticastSettings(str(exc)) from None


async def start_multicast_streaming(profiles: MediaProfiles, live: LiveStreams, token: str) -> None:
    """Stream the profile to its group until stopped, also after a restart (AutoStart)."""
    profile = (await profiles.state()).profile(token)
    path, group = profile.stream_path(), profile.multicast()
    start_group(live, path, group, profile.multicast_audio_port())
    await profiles.set_autostart(profile.multicast_source().token, True)


async def stop_multicast_streaming(profiles: MediaProfiles, live: LiveStreams, token: str) -> None:
    profile = (await profiles.state()).profile(token)
    live.stop_multicast(profile.stream_path())
    try:
        source = profile.multicast_source()
    except IncompleteConfiguration:
        return  # nothing was streaming: the spec asks for a plain success
    await profiles.set_autostart(source.token, False)


async def follow_multicast(profiles: MediaProfiles, live: LiveStreams, token: str) -> None:
    """After a Set of an encoder configuration: the streams multicast with its settings
    move to its new group (AutoStart on) or stop (off)."""
    state = await profiles.state()
    for profile in state.profiles:
        try:
            source, path = profile.multicast_source(), profile.stream_path()
        except IncompleteConfiguration:
            continue
        if source.token != token or source.multicast is None:
            continue
        if source.multicast.auto_start:
            try:
                start_group(live, path, profile.multicast(), profile.multicast_audio_port())
            except NvrError as exc:  # the setting is kept; the stream follows when it can
                log.info("multicast of %s not started: %s", path, exc.message)
        else:
            live.stop_multicast(path)


async def resume_multicast(profiles: MediaProfiles, live: LiveStreams) -> None:
    """At start-up: every stream that multicast without RTSP before goes on doing so."""
    await profiles.state()  # also fills the profile -> stream map of /snapshot/<profile>
    for path, (group, audio_port) in (await profiles.autostarted()).items():
        try:
            start_group(live, path, group, audio_port)
        except NvrError as exc:
            log.warning("multicast of %s not resumed: %s", path, exc.message)


# -- addresses ------------------------------------------------------------------------------------
def _host(ctx: CallContext) -> str:
    host = urllib.parse.urlsplit(ctx.base_url).hostname or "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def rtsp_uri(ctx: CallContext, live: LiveStreams, path: str) -> str:
    """The stream at ``path`` on the RTSP server, at the host the client reached us by."""
    return f"rtsp://{_host(ctx)}:{live.bound_port}{path}"


def multicast_uri(ctx: CallContext, live: LiveStreams, path: str) -> str:
    """The stream at ``path`` set up for multicast: its DESCRIBE names the group in ``c=``
    and each track's port (Streaming: a multicast URI's SDP gives the group)."""
    return rtsp_uri(ctx, live, path) + "?multicast"


def tunnel_uri(ctx: CallContext, path: str) -> str:
    """RTSP over HTTP on the SOAP port (Streaming: the tunnel shares the web service's port)."""
    return f"{ctx.base_url}/rtsp-tunnel{path}"


def snapshot_uri(ctx: CallContext, profile: Profile) -> str:
    if not profile.receiver or VIDEO_SOURCE not in profile.configurations:
        raise IncompleteConfiguration(f"profile {profile.token} has no video source")
    return f"{ctx.base_url}/snapshot/{profile.receiver}"


# -- values shared by both services ---------------------------------------------------------------
def multicast_value(multicast: Multicast | None) -> dict[str, Any]:
    m = multicast or Multicast("0.0.0.0", 0, 1)
    ipv6 = ":" in m.address
    address = (
        {"Type": "IPv6", "IPv6Address": m.address}
        if ipv6
        else {"Type": "IPv4", "IPv4Address": m.address}
    )
    return {"Address": address, "Port": m.port, "TTL": m.ttl, "AutoStart": m.auto_start}


def multicast_from(value: Any) -> Multicast | None:
    if value is None:
        return None
    address = optional(value, "Address")
    text = optional(address, "IPv4Address") or optional(address, "IPv6Address") or "0.0.0.0"
    return Multicast(
        str(text),
        int(optional(value, "Port", 0) or 0),
        int(optional(value, "TTL", 1) or 0),
        bool(optional(value, "AutoStart", False)),
    )


def video_source_configuration_value(c: Configuration) -> dict[str, Any]:
    return {
        "Name": c.name,
        "UseCount": c.use_count,
        "token": c.token,
        "SourceToken": c.source_token,
        "Bounds": {"x": 0, "y": 0, "width": c.width, "height": c.height},
    }


def audio_source_configuration_value(c: Configuration) -> dict[str, Any]:
    return {
        "Name": c.name,
        "UseCount": c.use_count,
        "token": c.token,
        "SourceToken": c.source_token,
    }


def metadata_configuration_value(c: Configuration) -> dict[str, Any]:
    return {
        "Name": c.name,
        "UseCount": c.use_count,
        "token": c.token,
        "Analytics": False,
        "Multicast": multicast_value(c.multicast),
        "SessionTimeout": datetime.timedelta(seconds=SESSION_TIMEOUT_S),
    }


def video_source_value(source: Source) -> dict[str, Any]:
    video = source.facts.video
    width, height = (video.width, video.height) if video is not None else (0, 0)
    return {
        "token": f"VS_{source.index}",
        "Framerate": float(source.facts.frame_rate or 0.0),
        "Resolution": {"Width": width, "Height": height},
    }


def audio_source_value(source: Source) -> dict[str, Any]:
    audio = source.facts.audio
    return {"token": f"AS_{source.index}", "Channels": audio.channels if audio else 1}


def video_source_modes(state: MediaState, token: str, ver10: bool) -> list[dict[str, Any]]:
    """The one mode of a video source: the stream as the camera sends it."""
    try:
        source = state.source(token)
    except NoSource:
        raise InvalidArgument(f"no video source {token!r}", "NoVideoSource") from None
    if token != f"VS_{source.index}":
        raise InvalidArgument(f"no video source {token!r}", "NoVideoSource")
    video = source.facts.video
    encoders = [
        c
        for c in state.of_kind(VIDEO_ENCODER)
        if c.receiver == source.receiver.token and (visible(c) or not ver10)
    ]
    return [
        {
            "token": f"VSM_{source.index}",
            "Enabled": True,
            "MaxFramerate": float(source.facts.frame_rate or 0.0),
            "MaxResolution": {
                "Width": video.width if video else 0,
                "Height": video.height if video else 0,
            },
            "Encodings": [c.encoding for c in encoders],
            "Reboot": False,
            "Description": "the stream as the camera sends it",
        }
    ]


def video_source_options(state: MediaState, sources: list[Source]) -> dict[str, Any]:
    video = sources[0].facts.video if sources else None
    width, height = (video.width, video.height) if video is not None else (0, 0)
    return {
        "BoundsRange": {
            "XRange": {"Min": 0, "Max": 0},
            "YRange": {"Min": 0, "Max": 0},
            "WidthRange": {"Min": width, "Max": width},
            "HeightRange": {"Min": height, "Max": height},
        },
        "VideoSourceTokensAvailable": [f"VS_{s.index}" for s in sources],
        "MaximumNumberOfProfiles": MAX_PROFILES,
    }


def bitrate_range(c: Configuration) -> dict[str, int]:
    return {"Min": (c.bitrate_kbps * 3 + 3) // 4, "Max": MAX_BITRATE_KBPS}


def sources_for(
    state: MediaState, kind: str, config_token: str | None, profile_token: str | None
) -> list[Source]:
    """The sources an Options request is about: a configuration's, a profile's, or all."""
    receiver = None
    if config_token:
        receiver = state.configuration(kind, config_token).receiver
    elif profile_token:
        receiver = state.profile(profile_token).receiver or None
    return [s for s in state.sources if receiver is None or s.receiver.token == receiver]


def encoders_for(
    state: MediaState, kind: str, config_token: str | None, profile_token: str | None
) -> list[Configuration]:
    """The encoder configurations an Options request is about."""
    if config_token:
        return [state.configuration(kind, config_token)]
    if profile_token:
        profile = state.profile(profile_token)
        held = profile.configurations.get(kind)
        return [held] if held is not None else state.compatible(profile, kind)
    return state.of_kind(kind)


# -- ver10 values ---------------------------------------------------------------------------------
def visible(c: Configuration) -> bool:
    """Whether the ver10 schema can describe it (no H.265 or Opus in tt:*Encoding)."""
    if c.kind == VIDEO_ENCODER:
        return c.encoding in VER10_VIDEO
    if c.kind == AUDIO_ENCODER:
        return c.encoding in VER10_AUDIO
    return True


def video_encoder_value(c: Configuration) -> dict[str, Any]:
    value: dict[str, Any] = {
        "Name": c.name,
        "UseCount": c.use_count,
        "token": c.token,
        "Encoding": VER10_VIDEO[c.encoding],
        "Resolution": {"Width": c.width, "Height": c.height},
        "Quality": c.quality,
        "RateControl": {
            "FrameRateLimit": round(c.frame_rate),
            "EncodingInterval": 1,
            "BitrateLimit": c.bitrate_kbps,
        },
        "Multicast": multicast_value(c.multicast),
        "SessionTimeout": datetime.timedelta(seconds=SESSION_TIMEOUT_S),
    }
    if c.encoding == "H264":
        value["H264"] = {"GovLength": c.gov_length or 1, "H264Profile": c.profile or "Main"}
    return value


def audio_encoder_value(c: Configuration) -> dict[str, Any]:
    return {
        "Name": c.name,
        "UseCount": c.use_count,
        "token": c.token,
        "Encoding": VER10_AUDIO[c.encoding],
        "Bitrate": c.bitrate_kbps,
        "SampleRate": c.sample_rate // 1000,
        "Multicast": multicast_value(c.multicast),
        "SessionTimeout": datetime.timedelta(seconds=SESSION_TIMEOUT_S),
    }


VALUES: dict[str, Callable[[Configuration], dict[str, Any]]] = {
    VIDEO_SOURCE: video_source_configuration_value,
    AUDIO_SOURCE: audio_source_configuration_value,
    VIDEO_ENCODER: video_encoder_value,
    AUDIO_ENCODER: audio_encoder_value,
    METADATA: metadata_configuration_value,
}
#: The element of tt:Profile each kind goes in.
PROFILE_FIELDS = {
    VIDEO_SOURCE: "VideoSourceConfiguration",
    AUDIO_SOURCE: "AudioSourceConfiguration",
    VIDEO_ENCODER: "VideoEncoderConfiguration",
    AUDIO_ENCODER: "AudioEncoderConfiguration",
    METADATA: "MetadataConfiguration",
}


def profile_value(profile: Profile) -> dict[str, Any]:
    value: dict[str, Any] = {"Name": profile.name, "token": profile.token, "fixed": profile.fixed}
    for kind, config in profile.configurations.items():
        if visible(config):
            value[PROFILE_FIELDS[kind]] = VALUES[kind](config)
    return value


def video_encoder_options(configs: list[Configuration]) -> dict[str, Any]:
    options: dict[str, Any] = {"QualityRange": {"Min": int(QUALITY), "Max": int(QUALITY)}}
    extension: dict[str, Any] = {}
    for c in configs:
        if not visible(c) or c.encoding in options:
            continue
        key = VER10_VIDEO[c.encoding]
        rate = round(c.frame_rate)
        base: dict[str, Any] = {
            "ResolutionsAvailable": [{"Width": c.width, "Height": c.height}],
            "FrameRateRange": {"Min": rate, "Max": rate},
            "EncodingIntervalRange": {"Min": 1, "Max": 1},
        }
        if key == "H264":
            gov = c.gov_length or 1
            base["GovLengthRange"] = {"Min": gov, "Max": gov}
            base["H264ProfilesSupported"] = [c.profile or "Main"]
            # H264Options orders GovLengthRange before FrameRateRange; zeep orders by schema.
        options[key] = base
        extension[key] = {**base, "BitrateRange": bitrate_range(c)}
    if extension:
        options["Extension"] = extension
    return options


def audio_encoder_options(configs: list[Configuration]) -> dict[str, Any]:
    seen: dict[str, dict[str, Any]] = {}
    for c in configs:
        if visible(c):
            seen.setdefault(
                VER10_AUDIO[c.encoding],
                {
                    "Encoding": VER10_AUDIO[c.encoding],
                    "BitrateList": {"Items": [c.bitrate_kbps]},
                    "SampleRateList": {"Items": [c.sample_rate // 1000]},
                },
            )
    return {"Options": list(seen.values())}


def proposal_from(kind: str, value: Any, current: Configuration, ver10: bool) -> Proposal:
    """What a Set*Configuration request asks, in domain terms."""
    if value is None:
        raise InvalidArgument("Configuration is missing")
    name = optional(value, "Name")
    common: dict[str, Any] = {"name": str(name) if name is not None else None}
    if kind in (VIDEO_SOURCE, AUDIO_SOURCE):
        common["source_token"] = optional(value, "SourceToken")
        bounds = optional(value, "Bounds")
        if bounds is not None:
            common["bounds"] = (
                int(bounds.x or 0),
                int(bounds.y or 0),
                int(bounds.width or 0),
                int(bounds.height or 0),
            )
        return Proposal(**common)
    common["multicast"] = multicast_from(optional(value, "Multicast"))
    if kind == METADATA:
        return Proposal(**common, analytics=bool(optional(value, "Analytics", False)))
    encoding = optional(value, "Encoding")
    if encoding is not None:
        common["encoding"] = encoding_from(str(encoding), current, ver10)
    if kind == AUDIO_ENCODER:
        rate = optional(value, "SampleRate")
        bitrate = optional(value, "Bitrate")
        return Proposal(
            **common,
            sample_rate_khz=int(rate) if rate is not None else None,
            bitrate_kbps=int(bitrate) if bitrate is not None else None,
        )
    resolution = optional(value, "Resolution")
    if resolution is not None:
        common["resolution"] = (int(resolution.Width), int(resolution.Height))
    quality = optional(value, "Quality")
    rate_control = optional(value, "RateControl")
    frame_rate = optional(rate_control, "FrameRateLimit")
    bitrate = optional(rate_control, "BitrateLimit")
    if ver10:
        h264 = optional(value, "H264")
        gov, profile = optional(h264, "GovLength"), optional(h264, "H264Profile")
    else:
        gov, profile = optional(value, "GovLength"), optional(value, "Profile")
    return Proposal(
        **common,
        quality=float(quality) if quality is not None else None,
        frame_rate=float(frame_rate) if frame_rate is not None else None,
        bitrate_kbps=int(bitrate) if bitrate is not None else None,
        gov_length=int(gov) if gov is not None and current.encoding != "JPEG" else None,
        profile=str(profile) if profile is not None and current.encoding != "JPEG" else None,
    )


def encoding_from(name: str, current: Configuration, ver10: bool) -> str:
    """A request's encoding name as the domain names it (the current one when it is
    another name of the same thing: G711 for PCMU/PCMA, Media2's MIME names)."""
    if ver10:
        names = {**VER10_VIDEO, **VER10_AUDIO}
    else:
        names = {"H264": "H264", "H265": "H265", "JPEG": "JPEG", **AUDIO_MIME}
    if names.get(current.encoding, "").upper() == name.upper():
        return current.encoding
    return name


class MediaOperations:
    """What the Media (ver10) and Media2 (ver20) bindings do alike: both read the same
    profiles and configurations (recording/media_config.py) and reach the same streams;
    they differ in how values are written and in a few operations of their own."""

    #: Media (ver10) rather than Media2 forms of the values and requests.
    ver10: bool

    def __init__(self, profiles: MediaProfiles, live: LiveStreams, binding: Binding) -> None:
        self.profiles = profiles
        self.live = live
        self.binding = binding

    def capabilities(self) -> dict[str, Any]:
        raise NotImplementedError

    def capabilities_element(self, ctx: CallContext) -> etree._Element:
        return render_service_capabilities(self.binding, self.capabilities())

    async def get_service_capabilities(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"Capabilities": self.capabilities()}

    def _set(self, kind: str) -> Handler:
        async def set_configuration(ctx: CallContext, req: Any) -> None:
            token = optional(req.Configuration, "token")
            state = await self.profiles.state()
            current = state.configuration(kind, str(token or ""))
            proposal = proposal_from(kind, req.Configuration, current, ver10=self.ver10)
            await self.profiles.set_configuration(kind, current.token, proposal)
            if proposal.multicast is not None:
                await follow_multicast(self.profiles, self.live, current.token)

        return set_configuration

    async def _encoders(self, kind: str, req: Any) -> tuple[MediaState, list[Configuration]]:
        """The encoder configurations an Options request names (by configuration or by
        profile; all when neither)."""
        state = await self.profiles.state()
        configs = encoders_for(
            state, kind, optional(req, "ConfigurationToken"), optional(req, "ProfileToken")
        )
        return state, configs

    async def video_source_options(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        sources = sources_for(
            state, VIDEO_SOURCE, optional(req, "ConfigurationToken"), optional(req, "ProfileToken")
        )
        return {"Options": video_source_options(state, sources)}

    async def audio_source_options(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        sources = sources_for(
            state, AUDIO_SOURCE, optional(req, "ConfigurationToken"), optional(req, "ProfileToken")
        )
        return {
            "Options": {"InputTokensAvailable": [f"AS_{s.index}" for s in sources if s.facts.audio]}
        }

    async def metadata_options(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        if optional(req, "ConfigurationToken"):
            state.configuration(METADATA, req.ConfigurationToken)
        if optional(req, "ProfileToken"):
            state.profile(req.ProfileToken)
        return {
            "Options": {
                "PTZStatusFilterOptions": {
                    "PanTiltStatusSupported": False,
                    "ZoomStatusSupported": False,
                }
            }
        }

    async def start_multicast(self, ctx: CallContext, req: Any) -> None:
        await start_multicast_streaming(self.profiles, self.live, req.ProfileToken)

    async def stop_multicast(self, ctx: CallContext, req: Any) -> None:
        await stop_multicast_streaming(self.profiles, self.live, req.ProfileToken)

    async def set_synchronization_point(self, ctx: CallContext, req: Any) -> None:
        state = await self.profiles.state()
        self.live.synchronization_point(state.profile(req.ProfileToken).stream_path())

    async def get_video_source_modes(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        return {
            "VideoSourceModes": video_source_modes(state, req.VideoSourceToken, ver10=self.ver10)
        }


class MediaService(MediaOperations):
    """Handlers of the MediaBinding."""

    ver10 = True

    def capabilities(self) -> dict[str, Any]:
        return {
            "ProfileCapabilities": {"MaximumNumberOfProfiles": MAX_PROFILES},
            "StreamingCapabilities": {
                "RTPMulticast": True,
                "RTP_TCP": True,
                "RTP_RTSP_TCP": True,
                "NonAggregateControl": False,
                "NoRTSPStreaming": False,
            },
            "SnapshotUri": True,
            "Rotation": False,
            "VideoSourceMode": False,
            "OSD": False,
        }

    def legacy_capabilities(self, ctx: CallContext) -> dict[str, Any]:
        """GetCapabilities' ``Media`` (tt:MediaCapabilities) besides XAddr."""
        return {
            "StreamingCapabilities": {"RTPMulticast": True, "RTP_TCP": True, "RTP_RTSP_TCP": True},
            "Extension": {"ProfileCapabilities": {"MaximumNumberOfProfiles": MAX_PROFILES}},
        }

    # -- sources ---------------------------------------------------------------------------
    async def get_video_sources(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        return {"VideoSources": [video_source_value(s) for s in state.sources]}

    async def get_audio_sources(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        return {"AudioSources": [audio_source_value(s) for s in state.sources if s.facts.audio]}

    # -- profiles --------------------------------------------------------------------------
    async def get_profiles(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        return {"Profiles": [profile_value(p) for p in state.profiles]}

    async def get_profile(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        return {"Profile": profile_value(state.profile(req.ProfileToken))}

    async def create_profile(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        token = optional(req, "Token")
        profile = await self.profiles.create_profile(str(req.Name), str(token) if token else None)
        return {"Profile": profile_value(profile)}

    async def delete_profile(self, ctx: CallContext, req: Any) -> None:
        await self.profiles.delete_profile(req.ProfileToken)

    def _add(self, kind: str) -> Handler:
        async def add(ctx: CallContext, req: Any) -> None:
            state = await self.profiles.state()
            config = state.configuration(kind, req.ConfigurationToken)
            if not visible(config):
                raise InvalidArgument(f"{config.token} is not a ver10 configuration", "NoConfig")
            await self.profiles.add_configurations(req.ProfileToken, {kind: config.token})

        return add

    def _remove(self, kind: str) -> Handler:
        async def remove(ctx: CallContext, req: Any) -> None:
            await self.profiles.remove_configurations(req.ProfileToken, [kind], strict=False)

        return remove

    # -- configurations --------------------------------------------------------------------
    def _list(self, kind: str) -> Handler:
        async def get_all(ctx: CallContext, req: Any) -> dict[str, Any]:
            state = await self.profiles.state()
            return {"Configurations": [VALUES[kind](c) for c in state.of_kind(kind) if visible(c)]}

        return get_all

    def _get(self, kind: str) -> Handler:
        async def get_one(ctx: CallContext, req: Any) -> dict[str, Any]:
            state = await self.profiles.state()
            config = state.configuration(kind, req.ConfigurationToken)
            if not visible(config):
                raise InvalidArgument(f"{config.token} is not a ver10 configuration", "NoConfig")
            return {"Configuration": VALUES[kind](config)}

        return get_one

    def _compatible(self, kind: str) -> Handler:
        async def compatible(ctx: CallContext, req: Any) -> dict[str, Any]:
            state = await self.profiles.state()
            profile = state.profile(req.ProfileToken)
            configs = [c for c in state.compatible(profile, kind) if visible(c)]
            return {"Configurations": [VALUES[kind](c) for c in configs]}

        return compatible

    async def video_encoder_options(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        _, configs = await self._encoders(VIDEO_ENCODER, req)
        return {"Options": video_encoder_options(configs)}

    async def audio_encoder_options(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        _, configs = await self._encoders(AUDIO_ENCODER, req)
        return {"Options": audio_encoder_options(configs)}

    async def guaranteed_encoders(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        source = state.configuration(VIDEO_SOURCE, req.ConfigurationToken)
        encoders = [
            c for c in state.of_kind(VIDEO_ENCODER) if c.receiver == source.receiver and visible(c)
        ]
        counts = {e: sum(c.encoding == e for c in encoders) for e in ("JPEG", "H264")}
        return {"TotalNumber": len(encoders), "JPEG": counts["JPEG"], "H264": counts["H264"]}

    # -- streaming -------------------------------------------------------------------------
    async def get_stream_uri(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        profile = state.profile(req.ProfileToken)
        setup = req.StreamSetup
        stream = str(optional(setup, "Stream") or "")
        protocol = str(optional(optional(setup, "Transport"), "Protocol") or "")
        path = profile.stream_path()
        if stream == "RTP-Unicast" and protocol in ("UDP", "TCP", "RTSP"):
            uri = rtsp_uri(ctx, self.live, path)
        elif stream == "RTP-Unicast" and protocol == "HTTP":
            uri = tunnel_uri(ctx, path)
        elif stream == "RTP-Multicast" and protocol in ("UDP", "RTSP"):
            profile.multicast()  # InvalidMulticastSettings when it has none
            uri = multicast_uri(ctx, self.live, path)
        else:
            raise InvalidStreamSetup(f"{stream} over {protocol} is not offered")
        return {"MediaUri": media_uri(uri)}

    async def get_snapshot_uri(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        return {"MediaUri": media_uri(snapshot_uri(ctx, state.profile(req.ProfileToken)))}

    async def get_osds(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        return {"OSDs": []}

    def handlers(self) -> dict[str, Handler]:
        handlers: dict[str, Handler] = {
            "GetServiceCapabilities": self.get_service_capabilities,
            "GetVideoSources": self.get_video_sources,
            "GetAudioSources": self.get_audio_sources,
            "GetProfiles": self.get_profiles,
            "GetProfile": self.get_profile,
            "CreateProfile": self.create_profile,
            "DeleteProfile": self.delete_profile,
            "GetVideoSourceConfigurationOptions": self.video_source_options,
            "GetVideoEncoderConfigurationOptions": self.video_encoder_options,
            "GetAudioSourceConfigurationOptions": self.audio_source_options,
            "GetAudioEncoderConfigurationOptions": self.audio_encoder_options,
            "GetMetadataConfigurationOptions": self.metadata_options,
            "GetGuaranteedNumberOfVideoEncoderInstances": self.guaranteed_encoders,
            "GetStreamUri": self.get_stream_uri,
            "GetSnapshotUri": self.get_snapshot_uri,
            "StartMulticastStreaming": self.start_multicast,
            "StopMulticastStreaming": self.stop_multicast,
            "SetSynchronizationPoint": self.set_synchronization_point,
            "GetOSDs": self.get_osds,
            "GetVideoSourceModes": self.get_video_source_modes,
        }
        for kind in (VIDEO_SOURCE, AUDIO_SOURCE, VIDEO_ENCODER, AUDIO_ENCODER, METADATA):
            name = f"{kind}Configuration"
            handlers[f"Get{name}s"] = self._list(kind)
            handlers[f"Get{name}"] = self._get(kind)
            handlers[f"GetCompatible{name}s"] = self._compatible(kind)
            handlers[f"Add{name}"] = self._add(kind)
            handlers[f"Remove{name}"] = self._remove(kind)
            handlers[f"Set{name}"] = self._set(kind)
        return handlers


def media_uri(uri: str) -> dict[str, Any]:
    return {
        "Uri": uri,
        "InvalidAfterConnect": False,
        "InvalidAfterReboot": False,
        "Timeout": datetime.timedelta(0),
    }
