"""Media2 service (tr2, ver20): the same profiles as the Media service, in Media2's model
(Profile T): configurations addressed by type, H.265 and every audio encoding, the RTSP
protocols by name, ProfileChanged/ConfigurationChanged events (published by the domain).
"""

from __future__ import annotations

from typing import Any

from onvif_nvr.errors import InvalidArgument
from onvif_nvr.recording.media_config import (
    AUDIO_ENCODER,
    AUDIO_SOURCE,
    KINDS,
    MAX_PROFILES,
    METADATA,
    QUALITY,
    VIDEO_ENCODER,
    VIDEO_SOURCE,
    Configuration,
    InvalidStreamSetup,
    MediaState,
    NoConfig,
    Profile,
)
from onvif_nvr.services.common import optional
from onvif_nvr.services.media import (
    AUDIO_MIME,
    MediaOperations,
    audio_source_configuration_value,
    bitrate_range,
    metadata_configuration_value,
    multicast_uri,
    multicast_value,
    rtsp_uri,
    snapshot_uri,
    tunnel_uri,
    video_source_configuration_value,
)
from onvif_nvr.soap.dispatch import CallContext, Handler

#: GetStreamUri protocols offered (Media2 §5.6.1); the secure ones are not (no RTSPS).
UNICAST = ("RtspUnicast", "RTSP")


def video_encoder2_value(c: Configuration) -> dict[str, Any]:
    value: dict[str, Any] = {
        "Name": c.name,
        "UseCount": c.use_count,
        "token": c.token,
        "Encoding": c.encoding,
        "Resolution": {"Width": c.width, "Height": c.height},
        "RateControl": {
            "FrameRateLimit": float(c.frame_rate),
            "BitrateLimit": c.bitrate_kbps,
            "ConstantBitRate": False,
        },
        "Multicast": multicast_value(c.multicast),
        "Quality": c.quality,
    }
    if not c.jpeg:
        value["GovLength"] = c.gov_length or 1
        if c.profile:
            value["Profile"] = c.profile
    return value


def audio_encoder2_value(c: Configuration) -> dict[str, Any]:
    return {
        "Name": c.name,
        "UseCount": c.use_count,
        "token": c.token,
        "Encoding": AUDIO_MIME.get(c.encoding, c.encoding),
        "Multicast": multicast_value(c.multicast),
        "Bitrate": c.bitrate_kbps,
        "SampleRate": c.sample_rate // 1000,
    }


VALUES = {
    VIDEO_SOURCE: video_source_configuration_value,
    AUDIO_SOURCE: audio_source_configuration_value,
    VIDEO_ENCODER: video_encoder2_value,
    AUDIO_ENCODER: audio_encoder2_value,
    METADATA: metadata_configuration_value,
}


def profile2_value(profile: Profile, types: list[str] | None) -> dict[str, Any]:
    """A ``tr2:MediaProfile`` with the configurations of ``types`` ("All": every one)."""
    value: dict[str, Any] = {"Name": profile.name, "token": profile.token, "fixed": profile.fixed}
    wanted = set(KINDS) if types and "All" in types else set(types or ())
    held = {k: VALUES[k](c) for k, c in profile.configurations.items() if k in wanted}
    if held:
        value["Configurations"] = held
    return value


def video_encoder2_options(c: Configuration) -> dict[str, Any]:
    value: dict[str, Any] = {
        "Encoding": c.encoding,
        "QualityRange": {"Min": QUALITY, "Max": QUALITY},
        "ResolutionsAvailable": [{"Width": c.width, "Height": c.height}],
        "BitrateRange": bitrate_range(c),
        "FrameRatesSupported": [float(c.frame_rate)],
        "ConstantBitRateSupported": False,
    }
    if not c.jpeg:
        value["GovLengthRange"] = [c.gov_length or 1, c.gov_length or 1]
        if c.profile:
            value["ProfilesSupported"] = [c.profile]
    return value


def audio_encoder2_options(c: Configuration) -> dict[str, Any]:
    return {
        "Encoding": AUDIO_MIME.get(c.encoding, c.encoding),
        "BitrateList": {"Items": [c.bitrate_kbps]},
        "SampleRateList": {"Items": [c.sample_rate // 1000]},
    }


def refs_from(state: MediaState, profile: Profile | None, items: Any) -> dict[str, str]:
    """``tr2:ConfigurationRef`` items as ``kind -> token``; an item without Token gets the
    first configuration of its type that fits the profile (and the items before it)."""
    refs: dict[str, str] = {}
    pending = []
    for item in items or ():
        kind = str(item.Type)
        if kind == "All":
            continue
        if kind not in KINDS:
            raise NoConfig(f"the box has no {kind} configurations")
        token = optional(item, "Token")
        if token:
            refs[kind] = state.configuration(kind, str(token)).token
        else:
            pending.append(kind)
    receiver = next(
        (
            state.configurations[t].receiver
            for t in refs.values()
            if state.configurations[t].receiver
        ),
        profile.receiver if profile is not None else "",
    )
    for kind in pending:
        fits = [c for c in state.of_kind(kind) if not receiver or c.receiver in ("", receiver)]
        if kind == VIDEO_ENCODER:  # prefer the stream itself to the JPEG re-encoding
            fits.sort(key=lambda c: c.jpeg)
        if not fits:
            raise NoConfig(f"no {kind} configuration fits this profile")
        refs[kind] = fits[0].token
        receiver = receiver or fits[0].receiver
    return refs


class Media2Service(MediaOperations):
    """Handlers of the Media2Binding."""

    ver10 = False

    def capabilities(self) -> dict[str, Any]:
        return {
            "ProfileCapabilities": {
                "MaximumNumberOfProfiles": MAX_PROFILES,
                "ConfigurationsSupported": list(KINDS),
            },
            "StreamingCapabilities": {
                "RTSPStreaming": True,
                "RTPMulticast": True,
                "RTP_RTSP_TCP": True,
                "NonAggregateControl": False,
                "AutoStartMulticast": True,
                "SecureRTSPStreaming": False,
            },
            "SnapshotUri": True,
            "Rotation": False,
            "VideoSourceMode": False,
            "OSD": False,
            "TemporaryOSDText": False,
            "Mask": False,
            "SourceMask": False,
        }

    # -- profiles --------------------------------------------------------------------------
    async def get_profiles(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        token = optional(req, "Token")
        types = [str(t) for t in optional(req, "Type", None) or ()]
        profiles = [state.profile(token)] if token else list(state.profiles)
        return {"Profiles": [profile2_value(p, types) for p in profiles]}

    async def create_profile(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        refs = refs_from(state, None, optional(req, "Configuration", None))
        profile = await self.profiles.create_profile(str(req.Name), refs=refs)
        return {"Token": profile.token}

    async def delete_profile(self, ctx: CallContext, req: Any) -> None:
        await self.profiles.delete_profile(req.Token)

    async def add_configuration(self, ctx: CallContext, req: Any) -> None:
        state = await self.profiles.state()
        profile = state.profile(req.ProfileToken)
        refs = refs_from(state, profile, optional(req, "Configuration", None))
        name = optional(req, "Name")
        await self.profiles.add_configurations(
            profile.token, refs, str(name) if name is not None else None
        )

    async def remove_configuration(self, ctx: CallContext, req: Any) -> None:
        state = await self.profiles.state()
        profile = state.profile(req.ProfileToken)
        kinds: set[str] = set()
        for item in optional(req, "Configuration", None) or ():
            kind = str(item.Type)
            if kind == "All":
                kinds.update(KINDS)
            elif kind in KINDS:
                held = profile.configurations.get(kind)
                token = optional(item, "Token")
                if token and (held is None or held.token != token):
                    raise NoConfig(f"profile {profile.token} holds no {kind} {token!r}")
                kinds.add(kind)
            else:
                raise NoConfig(f"the box has no {kind} configurations")
        await self.profiles.remove_configurations(profile.token, kinds)

    # -- configurations --------------------------------------------------------------------
    def _list(self, kind: str) -> Handler:
        async def get_configurations(ctx: CallContext, req: Any) -> dict[str, Any]:
            state = await self.profiles.state()
            token, profile_token = (
                optional(req, "ConfigurationToken"),
                optional(req, "ProfileToken"),
            )
            if token:
                configs = [state.configuration(kind, token)]
            elif profile_token:
                configs = state.compatible(state.profile(profile_token), kind)
            else:
                configs = state.of_kind(kind)
            return {"Configurations": [VALUES[kind](c) for c in configs]}

        return get_configurations

    async def video_encoder_options(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        _, configs = await self._encoders(VIDEO_ENCODER, req)
        return {"Options": [video_encoder2_options(c) for c in configs]}

    async def audio_encoder_options(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        _, configs = await self._encoders(AUDIO_ENCODER, req)
        return {"Options": [audio_encoder2_options(c) for c in configs]}

    async def video_encoder_instances(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        source = state.configuration(VIDEO_SOURCE, req.ConfigurationToken)
        encoders = [c for c in state.of_kind(VIDEO_ENCODER) if c.receiver == source.receiver]
        codecs: dict[str, int] = {}
        for c in encoders:
            codecs[c.encoding] = codecs.get(c.encoding, 0) + 1
        return {
            "Info": {
                "Codec": [{"Encoding": e, "Number": n} for e, n in codecs.items()],
                "Total": len(encoders),
            }
        }

    # -- streaming -------------------------------------------------------------------------
    async def get_stream_uri(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        profile = state.profile(req.ProfileToken)
        protocol = str(req.Protocol)
        path = profile.stream_path()
        if protocol in UNICAST:
            uri = rtsp_uri(ctx, self.live, path)
        elif protocol == "RtspMulticast":
            profile.multicast()
            uri = multicast_uri(ctx, self.live, path)
        elif protocol == "RtspOverHttp":
            uri = tunnel_uri(ctx, path)
        else:
            raise InvalidStreamSetup(f"protocol {protocol!r} is not offered")
        return {"Uri": uri}

    async def get_snapshot_uri(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        state = await self.profiles.state()
        return {"Uri": snapshot_uri(ctx, state.profile(req.ProfileToken))}

    async def get_osds(self, ctx: CallContext, req: Any) -> dict[str, Any]:
        if optional(req, "OSDToken"):
            raise InvalidArgument(f"no OSD {req.OSDToken!r}", "NoConfig")
        return {"OSDs": []}

    def handlers(self) -> dict[str, Handler]:
        handlers: dict[str, Handler] = {
            "GetServiceCapabilities": self.get_service_capabilities,
            "GetProfiles": self.get_profiles,
            "CreateProfile": self.create_profile,
            "DeleteProfile": self.delete_profile,
            "AddConfiguration": self.add_configuration,
            "RemoveConfiguration": self.remove_configuration,
            "GetVideoSourceConfigurationOptions": self.video_source_options,
            "GetVideoEncoderConfigurationOptions": self.video_encoder_options,
            "GetAudioSourceConfigurationOptions": self.audio_source_options,
            "GetAudioEncoderConfigurationOptions": self.audio_encoder_options,
            "GetMetadataConfigurationOptions": self.metadata_options,
            "GetVideoEncoderInstances": self.video_encoder_instances,
            "GetStreamUri": self.get_stream_uri,
            "GetSnapshotUri": self.get_snapshot_uri,
            "StartMulticastStreaming": self.start_multicast,
            "StopMulticastStreaming": self.stop_multicast,
            "SetSynchronizationPoint": self.set_synchronization_point,
            "GetOSDs": self.get_osds,
            "GetVideoSourceModes": self.get_video_source_modes,
        }
        for kind in KINDS:
            handlers[f"Get{kind}Configurations"] = self._list(kind)
            handlers[f"Set{kind}Configuration"] = self._set(kind)
        return handlers
