"""Media profiles (Media and Media2 services): what a client may stream of each receiver.

The box re-streams what its cameras send and never transcodes on that path, so the
configurations *describe* the real streams (codec and resolution from the parameter sets,
frame rate, bit rate and keyframe interval measured by the hub's meters) and a change that
would need an encoder answers ``ter:ConfigModify``. What can be honoured is kept: names,
multicast address/port/TTL/AutoStart, and which configurations each profile holds.

Per receiver (a camera stream, token ``RECEIVER_<i>``): a video source ``VS_<i>`` with its
configuration ``VSC_<i>``, the stream's encoder ``VEC_<i>``, a JPEG encoder ``VEC_<i>_JPEG``
(decoded and re-encoded on demand for viewers of that profile only), and, when the stream
has audio, ``AS_<i>``/``ASC_<i>``/``AEC_<i>``; two fixed profiles ``PROFILE_<i>`` (the
stream) and ``PROFILE_<i>_JPEG``. One metadata configuration ``METADATA`` serves every
profile. Profiles live in the database (migration 0010); see docs/design/media.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.events.bus import EventBus
from onvif_nvr.events.topics import ItemDescription, Topic, TopicDescription
from onvif_nvr.recording.media_config import (
    AUDIO_ENCODER,
    MAX_PROFILES,
    VIDEO_ENCODER,
    VIDEO_SOURCE,
    Configuration,
    DeletionOfFixedProfile,
    IncompleteConfiguration,
    MaxProfiles,
    MediaState,
    Multicast,
    NoConfig,
    NoProfile,
    Profile,
    ProfileExists,
    Proposal,
    Source,
    StreamFacts,
    audio_port_on,
    build_state,
    check_name,
    check_profile,
    check_proposal,
    default_multicast,
    fixed_profiles,
)
from onvif_nvr.recording.profile_g import receiver_from_row
from onvif_nvr.recording.supervisor import CameraRecorder

if TYPE_CHECKING:
    # Only a type here: the control plane (its recording jobs) resolves profiles with
    # profile_receiver below, so importing it at run time would be circular.
    from onvif_nvr.recording.control import RecordingControl

PROFILE_CHANGED = Topic.onvif("Media/ProfileChanged")
CONFIGURATION_CHANGED = Topic.onvif("Media/ConfigurationChanged")
#: The Media2 events (Media2 §5.11), added to the box's topic catalogue.
MEDIA_TOPICS = (
    TopicDescription(
        PROFILE_CHANGED, False, source=(ItemDescription("Token", "tt:ReferenceToken"),)
    ),
    TopicDescription(
        CONFIGURATION_CHANGED,
        False,
        source=(
            ItemDescription("Token", "tt:ReferenceToken"),
            ItemDescription("Type", "xs:string"),
        ),
    ),
)


# -- the service ----------------------------------------------------------------------------------
class MediaProfiles:
    """The media profiles of the box: read with :meth:`state`, changed by the methods below
    (each change is one database job; Media2's ProfileChanged/ConfigurationChanged are
    published on ``bus`` when one is given)."""

    def __init__(
        self,
        db: Database,
        control: RecordingControl,
        live_streams: Callable[[], Mapping[str, CameraRecorder]],
        bus: EventBus | None = None,
    ) -> None:
        self._db = db
        self._control = control
        self._live_streams = live_streams
        self._bus = bus
        #: The last facts seen of each receiver's stream, so that a stream that is down
        #: for a moment keeps its configurations.
        self._known: dict[str, StreamFacts] = {}
        self._last: MediaState | None = None

    async def sources(self) -> list[Source]:
        receivers = await self._control.receivers()
        streams = self._live_streams()
        out = []
        for receiver in receivers:
            facts = StreamFacts.of(streams.get(receiver.token))
            if facts.video is not None or facts.audio is not None:
                self._known[receiver.token] = facts
            else:
                facts = self._known.get(receiver.token, facts)
            out.append(Source(receiver, facts))
        return out

    async def state(self) -> MediaState:
        sources = await self.sources()
        return self._remember(await self._db.run(self._read, sources))

    def _remember(self, state: MediaState) -> MediaState:
        """Keep ``state`` as the last one read; a receiver's fixed profiles that came or
        went since the one before are announced (ProfileChanged; created and deleted
        profiles are announced by their operations)."""
        if self._last is not None:
            before = {p.token for p in self._last.profiles if p.fixed}
            after = {p.token for p in state.profiles if p.fixed}
            for token in sorted(before ^ after):
                self._profile_changed(token)
        self._last = state
        return state

    def receiver_of(self, profile_token: str) -> str | None:
        """The receiver token of a profile's stream (as last read), for the live and
        snapshot URLs that name a profile instead of a receiver."""
        for profile in self._last.profiles if self._last is not None else ():
            if profile.token == profile_token:
                return profile.receiver or None
        return None

    def _read(self, sources: list[Source]) -> MediaState:
        with self._db.session() as session, session.begin():
            rows, settings = _sync(session, sources)
        return build_state(sources, rows, settings)

    async def _change(
        self, change: Callable[[Session, MediaState], str | None]
    ) -> tuple[MediaState, str | None]:
        """Run ``change(session, state)`` in one transaction; its result is passed on."""
        sources = await self.sources()

        def job() -> tuple[MediaState, str | None]:
            with self._db.session() as session, session.begin():
                rows, settings = _sync(session, sources)
                result = change(session, build_state(sources, rows, settings))
                session.flush()
                rows, settings = _sync(session, sources)
            return build_state(sources, rows, settings), result

        state, result = await self._db.run(job)
        self._remember(state)
        return state, result

    # -- profiles --------------------------------------------------------------------------
    async def create_profile(
        self, name: str, token: str | None = None, refs: Mapping[str, str] | None = None
    ) -> Profile:
        refs = dict(refs or {})
        check_name(name)
        check_name(token, "Token")

        def change(session: Session, state: MediaState) -> str:
            if len(state.profiles) >= MAX_PROFILES:
                raise MaxProfiles()
            if token and any(p.token == token for p in state.profiles):
                raise ProfileExists(token)
            for kind, ref in refs.items():
                state.configuration(kind, ref)
            check_profile(state, refs)
            row = models.MediaProfile(token=token or "", name=name, configurations=refs)
            session.add(row)
            session.flush()
            if not token:
                row.token = f"MEDIA_PROFILE_{row.id}"
            return row.token

        state, created = await self._change(change)
        assert created is not None
        self._profile_changed(created)
        return state.profile(created)

    async def delete_profile(self, token: str) -> None:
        def change(session: Session, state: MediaState) -> None:
            if state.profile(token).fixed:
                raise DeletionOfFixedProfile(f"profile {token} is fixed")
            row = session.scalar(
                select(models.MediaProfile).where(models.MediaProfile.token == token)
            )
            session.delete(row)

        await self._change(change)
        self._profile_changed(token)

    async def add_configurations(
        self, token: str, refs: Mapping[str, str], name: str | None = None
    ) -> Profile:
        """Put each ``kind -> configuration token`` into the profile (replacing one of the
        same kind) and rename it when ``name`` is given."""
        check_name(name)

        def change(session: Session, state: MediaState) -> None:
            state.profile(token)
            for kind, ref in refs.items():
                state.configuration(kind, ref)
            row = _profile_row(session, token)
            held = {**row.configurations, **refs}
            check_profile(state, _present(state, held))
            row.configurations = held
            if name is not None:
                row.name = name

        state, _ = await self._change(change)
        self._profile_changed(token)
        return state.profile(token)

    async def remove_configurations(
        self, token: str, kinds: Iterable[str], *, strict: bool = True
    ) -> Profile:
        """Take configurations of ``kinds`` out of the profile; ``strict``: not one another
        configuration of the profile depends on (Media2), else ConfigurationConflict."""
        kinds = list(kinds)

        def change(session: Session, state: MediaState) -> None:
            state.profile(token)
            row = _profile_row(session, token)
            held = {k: v for k, v in row.configurations.items() if k not in kinds}
            if strict:
                check_profile(state, _present(state, held))
            row.configurations = held

        state, _ = await self._change(change)
        self._profile_changed(token)
        return state.profile(token)

    # -- configurations --------------------------------------------------------------------
    async def set_configuration(self, kind: str, token: str, proposal: Proposal) -> Configuration:
        """Apply what can be honoured of ``proposal`` (name, multicast) after checking that
        the rest describes the stream as it is; ConfigModify otherwise."""

        def change(session: Session, state: MediaState) -> None:
            current = state.configuration(kind, token)
            check_proposal(current, proposal)
            row = session.get(models.MediaConfiguration, token)
            settings = dict(row.settings) if row is not None else {}
            if proposal.name is not None:
                settings["name"] = proposal.name
            if proposal.multicast is not None:
                settings["multicast"] = proposal.multicast.check().to_json()
            if row is None:
                session.add(models.MediaConfiguration(token=token, settings=settings))
            else:
                row.settings = settings

        state, _ = await self._change(change)
        if self._bus is not None:
            self._bus.publish_simple(CONFIGURATION_CHANGED, {"Token": token, "Type": kind})
        return state.configuration(kind, token)

    async def set_autostart(self, token: str, on: bool) -> None:
        """Record whether the multicast stream of an encoder configuration runs without
        RTSP (its AutoStart: Start/StopMulticastStreaming switch it, a restart resumes it)."""

        def change(session: Session, state: MediaState) -> None:
            config = state.configurations.get(token)
            if config is None or config.multicast is None:
                raise NoConfig(f"no encoder configuration {token!r}")
            row = session.get(models.MediaConfiguration, token)
            settings = dict(row.settings) if row is not None else {}
            settings["multicast"] = {**config.multicast.to_json(), "auto_start": on}
            if row is None:
                session.add(models.MediaConfiguration(token=token, settings=settings))
            else:
                row.settings = settings

        await self._change(change)

    async def autostarted(self) -> dict[str, tuple[Multicast, int | None]]:
        """Stream path -> group of every profile whose multicast runs without RTSP, from
        what is stored (at start-up the streams are not measured yet, so this does not
        wait for their configurations)."""
        sources = await self.sources()

        def read() -> tuple[list[Any], dict[str, dict[str, Any]]]:
            with self._db.session() as session, session.begin():
                return _sync(session, sources)

        rows, settings = await self._db.run(read)
        receivers = {s.index: s.receiver.token for s in sources}
        out: dict[str, tuple[Multicast, int | None]] = {}
        for _, _, _, refs in rows:
            ref = refs.get(VIDEO_ENCODER) or refs.get(AUDIO_ENCODER)
            stored = settings.get(ref or "", {}).get("multicast")
            if not ref or not stored or not stored.get("auto_start"):
                continue
            receiver = receivers.get(_index_of(ref))
            if receiver is not None:
                path = f"/live/{receiver}" + ("/jpeg" if ref.endswith("_JPEG") else "")
                group = Multicast.from_json(stored)
                audio_ref = refs.get(AUDIO_ENCODER) if ref == refs.get(VIDEO_ENCODER) else None
                audio_stored = settings.get(audio_ref or "", {}).get("multicast")
                audio = None
                if audio_ref:
                    audio = (
                        Multicast.from_json(audio_stored)
                        if audio_stored
                        else default_multicast(_index_of(audio_ref), 1)
                    )
                out[path] = (group, audio_port_on(group, audio))
        return out

    async def stream_multicast(self, path: str) -> tuple[Multicast, int | None] | None:
        """The configured group of a live path (``/live/<receiver>[/jpeg]``) for RTSP
        multicast sessions: the encoder configuration's group and video port, and the audio
        port of the stream's audio encoder when it sends to the same group. None: not a
        receiver's stream, or not measured yet (the server picks a default)."""
        parts = path.strip("/").split("/")
        if len(parts) not in (2, 3) or parts[0] != "live" or parts[2:] not in ([], ["jpeg"]):
            return None
        state = await self.state()
        source = next((s for s in state.sources if s.receiver.token == parts[1]), None)
        if source is None:
            return None
        jpeg = len(parts) == 3
        video = state.configurations.get(f"VEC_{source.index}" + ("_JPEG" if jpeg else ""))
        if video is None or video.multicast is None:
            return None
        audio = None if jpeg else state.configurations.get(f"AEC_{source.index}")
        return video.multicast, audio_port_on(
            video.multicast, audio.multicast if audio is not None else None
        )

    def _profile_changed(self, token: str) -> None:
        if self._bus is not None:
            self._bus.publish_simple(PROFILE_CHANGED, {"Token": token})


def profile_receiver(session: Session, token: str) -> str:
    """(Database thread.) The token of the receiver whose stream the media profile ``token``
    plays — its video source's — for a recording job on that profile; a JPEG profile names
    the same receiver as the main one (jobs record the camera's stream, never the JPEG
    re-encoding). NoProfile for an unknown token, IncompleteConfiguration for a profile
    without a video source. The profiles are those GetProfiles would answer (a new
    receiver's fixed profiles are made here if no media call has made them yet)."""
    query = select(models.Camera).where(models.Camera.token.is_not(None)).order_by(models.Camera.id)
    # The video source configuration and its receiver do not depend on the stream's facts.
    sources = [Source(receiver_from_row(row), StreamFacts()) for row in session.scalars(query)]
    rows, _ = _sync(session, sources)
    profile = build_state(sources, rows, {}).profile(token)
    video = profile.configurations.get(VIDEO_SOURCE)
    if video is None or not video.receiver:
        raise IncompleteConfiguration(f"profile {token} has no video source configuration")
    return video.receiver


def _index_of(token: str) -> int:
    """The receiver id in one of the tokens made here (``VEC_<i>``, ``AEC_<i>``...)."""
    parts = token.split("_")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1


def _present(state: MediaState, refs: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in refs.items() if v in state.configurations}


def _profile_row(session: Session, token: str) -> models.MediaProfile:
    row = session.scalar(select(models.MediaProfile).where(models.MediaProfile.token == token))
    if row is None:
        raise NoProfile(token)
    return row


def _sync(
    session: Session, sources: list[Source]
) -> tuple[list[tuple[str, str, bool, dict[str, str]]], dict[str, dict[str, Any]]]:
    """(Database thread.) The stored profiles and settings, after making the fixed profiles
    of new receivers and dropping those of receivers that are gone."""
    rows = list(session.scalars(select(models.MediaProfile).order_by(models.MediaProfile.id)))
    by_receiver: dict[int, set[str]] = {}
    for row in rows:
        if row.receiver_id is not None:
            by_receiver.setdefault(row.receiver_id, set()).add(row.token)
    live = {s.index for s in sources}
    changed = False
    for row in rows:
        if row.receiver_id is not None and row.receiver_id not in live:
            session.delete(row)
            changed = True
    for source in sources:
        have = by_receiver.get(source.index, set())
        for token, name, refs in fixed_profiles(source):
            if token not in have:
                session.add(
                    models.MediaProfile(
                        token=token, name=name, receiver_id=source.index, configurations=refs
                    )
                )
                changed = True
    if changed:
        session.flush()
        rows = list(session.scalars(select(models.MediaProfile).order_by(models.MediaProfile.id)))
    settings = {
        row.token: dict(row.settings) for row in session.scalars(select(models.MediaConfiguration))
    }
    return [
        (r.token, r.name, r.receiver_id is not None, dict(r.configurations)) for r in rows
    ], settings
