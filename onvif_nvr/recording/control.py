"""The Profile G control plane: receivers, recordings, tracks and recording jobs.

The ONVIF Recording (trc) and Receiver (trv) services, the camera commands and the config
file's ``[[camera]]`` tables all drive the box through :class:`RecordingControl`. Every
object lives in the database (it survives restarts and power cuts, RecordingControl §5.2,
Receiver §5.2); after each change the control plane computes which recorders must run
(:func:`plan`) and hands that to the runtime (the :class:`RecordingManager`), which starts,
stops or reconnects them. See docs/design/profile-g.md.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from onvif_nvr.db import models
from onvif_nvr.errors import (
    BadConfiguration,
    CannotDelete,
    MaxRecordings,
    MaxTracks,
    NoRecording,
    NoTrack,
)
from onvif_nvr.recording.jobs import JobOps
from onvif_nvr.recording.profile_g import (
    CONNECTED,
    CONNECTING,
    DEFAULT_TRACKS,
    JOB_MODES,
    NOT_CONNECTED,
    PROFILE_TYPE,
    PROTOCOL_TRANSPORT,
    RECEIVER_MODES,
    RECEIVER_TYPE,
    TRACK_PREFIX,
    TRACK_TYPES,
    EventSink,
    IngestStatus,
    JobConfiguration,
    JobSource,
    JobState,
    JobTrack,
    Receiver,
    ReceiverConfiguration,
    RecorderSpec,
    Recording,
    RecordingConfiguration,
    RecordingJob,
    RecordingSource,
    Runtime,
    SourceState,
    StreamSetup,
    Track,
    TrackConfiguration,
    TrackState,
    aggregate,
    cut_text,
    plan,
    recording_from_row,
    recording_row,
    sources_from_json,
)

#: The API, its objects and vocabulary (the SOAP front-ends import them from here).
__all__ = [
    "CONNECTED",
    "CONNECTING",
    "DEFAULT_TRACKS",
    "JOB_MODES",
    "NOT_CONNECTED",
    "PROFILE_TYPE",
    "PROTOCOL_TRANSPORT",
    "RECEIVER_MODES",
    "RECEIVER_TYPE",
    "TRACK_TYPES",
    "EventSink",
    "IngestStatus",
    "JobConfiguration",
    "JobSource",
    "JobState",
    "JobTrack",
    "Receiver",
    "ReceiverConfiguration",
    "RecorderSpec",
    "Recording",
    "RecordingConfiguration",
    "RecordingControl",
    "RecordingJob",
    "RecordingSource",
    "Runtime",
    "SourceState",
    "StreamSetup",
    "Track",
    "TrackConfiguration",
    "TrackState",
    "aggregate",
    "plan",
]


class RecordingControl(JobOps):
    """The domain API of Profile G. Every method persists before it returns and raises
    the :mod:`onvif_nvr.errors` faults the specifications name."""

    # -- recordings and tracks ---------------------------------------------------------------
    async def recordings(self) -> list[Recording]:
        def read() -> list[Recording]:
            with self._db.session() as session:
                tracks: dict[int, list[models.Track]] = {}
                for t in session.scalars(select(models.Track)):
                    tracks.setdefault(t.recording_id, []).append(t)
                query = select(models.Recording).order_by(models.Recording.id)
                return [recording_from_row(r, tracks.get(r.id, [])) for r in session.scalars(query)]

        return await self._db.run(read)

    async def get_recording(self, token: str) -> Recording:
        def read() -> Recording | None:
            with self._db.session() as session:
                row = recording_row(session, token)
                if row is None:
                    return None
                tracks = session.scalars(
                    select(models.Track).where(models.Track.recording_id == row.id)
                )
                return recording_from_row(row, tracks)

        found = await self._db.run(read)
        if found is None:
            raise NoRecording(f"no recording {token!r}")
        return found

    async def create_recording(
        self,
        config: RecordingConfiguration,
        *,
        origin: str = "onvif",
        camera_id: int | None = None,
    ) -> Recording:
        """CreateRecording, with the tracks VIDEO001, AUDIO001 and META001."""
        if config.max_retention_s < 0:
            raise BadConfiguration("MaximumRetentionTime cannot be negative")
        async with self._lock:

            def write() -> Recording:
                with self._db.session() as session, session.begin():
                    return self._add_recording(session, config, origin, camera_id)

            recording = await self._db.run(write)
        self.on_event("RecordingConfig/CreateRecording", {"RecordingToken": recording.token})
        for track in recording.tracks:
            self.on_event(
                "RecordingConfig/CreateTrack",
                {"RecordingToken": recording.token, "TrackToken": track.token},
            )
        return recording

    def _add_recording(
        self,
        session: Session,
        config: RecordingConfiguration,
        origin: str,
        camera_id: int | None,
    ) -> Recording:
        count = session.scalar(select(func.count()).select_from(models.Recording)) or 0
        if count >= self.limits.max_recordings:
            raise MaxRecordings(
                f"the box has its maximum of {self.limits.max_recordings} recordings"
            )
        source = config.source
        row = models.Recording(
            token="",
            source_id=cut_text(source.source_id),
            source_name=cut_text(source.name),
            location=cut_text(source.location),
            description=cut_text(source.description),
            address=cut_text(source.address),
            content=cut_text(config.content),
            max_retention_s=config.max_retention_s,
            origin=origin,
            camera_id=camera_id,
            created_wall_ns=self._clock.wall_ns(),
        )
        session.add(row)
        session.flush()
        row.token = f"RECORDING_{row.id}"
        tracks = [
            models.Track(recording_id=row.id, token=token, track_type=kind, description="")
            for token, kind in DEFAULT_TRACKS
        ]
        session.add_all(tracks)
        session.flush()
        return recording_from_row(row, tracks)

    async def set_recording_configuration(self, token: str, config: RecordingConfiguration) -> None:
        if config.max_retention_s < 0:
            raise BadConfiguration("MaximumRetentionTime cannot be negative")

        def write() -> bool:
            with self._db.session() as session, session.begin():
                row = recording_row(session, token)
                if row is None:
                    return False
                source = config.source
                row.source_id = cut_text(source.source_id)
                row.source_name = cut_text(source.name)
                row.location = cut_text(source.location)
                row.description = cut_text(source.description)
                row.address = cut_text(source.address)
                row.content = cut_text(config.content)
                row.max_retention_s = config.max_retention_s
                return True

        async with self._lock:
            if not await self._db.run(write):
                raise NoRecording(f"no recording {token!r}")
        self.on_event(
            "RecordingConfig/RecordingConfiguration",
            {"RecordingToken": token, "Configuration": config},
        )

    async def delete_recording(self, token: str) -> None:
        """DeleteRecording: its jobs (and the receivers they auto-created), its recorded
        data (the durable delete order of docs/design/storage.md), its tracks."""
        async with self._lock:

            def jobs_of() -> tuple[int, list[str], list[str]] | None:
                with self._db.session() as session, session.begin():
                    row = recording_row(session, token)
                    if row is None:
                        return None
                    jobs = list(
                        session.scalars(
                            select(models.RecordingJob).where(
                                models.RecordingJob.recording_id == row.id
                            )
                        )
                    )
                    doomed = self._delete_jobs(session, jobs)
                    tracks = [
                        t.token
                        for t in session.scalars(
                            select(models.Track).where(models.Track.recording_id == row.id)
                        )
                    ]
                    return row.id, doomed, tracks

            found = await self._db.run(jobs_of)
            if found is None:
                raise NoRecording(f"no recording {token!r}")
            recording_id, _, tracks = found
            await self._apply()  # its recorders stop (and close their segments) first
            await self._delete_segments(recording_id)

            def drop() -> None:
                with self._db.session() as session, session.begin():
                    session.execute(
                        delete(models.Recording).where(models.Recording.id == recording_id)
                    )

            await self._db.run(drop)
        for track in tracks:
            self.on_event(
                "RecordingConfig/DeleteTrack", {"RecordingToken": token, "TrackToken": track}
            )
        self.on_event("RecordingConfig/DeleteRecording", {"RecordingToken": token})

    async def get_track(self, recording_token: str, track_token: str) -> Track:
        recording = await self.get_recording(recording_token)
        for track in recording.tracks:
            if track.token == track_token:
                return track
        raise NoTrack(f"recording {recording_token!r} has no track {track_token!r}")

    async def create_track(self, recording_token: str, config: TrackConfiguration) -> Track:
        if config.track_type not in TRACK_TYPES:
            raise BadConfiguration(f"TrackType must be one of {', '.join(TRACK_TYPES)}")

        def write() -> Track | None:
            with self._db.session() as session, session.begin():
                row = recording_row(session, recording_token)
                if row is None:
                    return None
                existing = {
                    t.token
                    for t in session.scalars(
                        select(models.Track).where(models.Track.recording_id == row.id)
                    )
                }
                if len(existing) >= self.limits.max_tracks:
                    raise MaxTracks(f"a recording has at most {self.limits.max_tracks} tracks")
                prefix = TRACK_PREFIX[config.track_type]
                n = 1
                while f"{prefix}{n:03d}" in existing:
                    n += 1
                track = models.Track(
                    recording_id=row.id,
                    token=f"{prefix}{n:03d}",
                    track_type=config.track_type,
                    description=cut_text(config.description),
                )
                session.add(track)
                return Track(track.token, TrackConfiguration(track.track_type, track.description))

        async with self._lock:
            track = await self._db.run(write)
        if track is None:
            raise NoRecording(f"no recording {recording_token!r}")
        self.on_event(
            "RecordingConfig/CreateTrack",
            {"RecordingToken": recording_token, "TrackToken": track.token},
        )
        return track

    async def delete_track(self, recording_token: str, track_token: str) -> None:
        """DeleteTrack. A track a recording job writes to cannot be deleted, nor a video or
        audio track with data: those share their files with the recording's other tracks."""

        def write() -> str:
            with self._db.session() as session, session.begin():
                row = recording_row(session, recording_token)
                if row is None:
                    return "no recording"
                track = session.scalar(
                    select(models.Track).where(
                        models.Track.recording_id == row.id, models.Track.token == track_token
                    )
                )
                if track is None:
                    return "no track"
                for job in session.scalars(
                    select(models.RecordingJob).where(models.RecordingJob.recording_id == row.id)
                ):
                    if any(
                        t.destination == track_token
                        for s in sources_from_json(job.sources)
                        for t in s.tracks
                    ):
                        return f"recording job {job.token} records into it"
                if track.track_type != "Metadata" and session.scalar(
                    select(models.Segment.id).where(models.Segment.recording_id == row.id).limit(1)
                ):
                    return "its data is stored together with the recording's other tracks"
                session.delete(track)
                return "ok"

        async with self._lock:
            outcome = await self._db.run(write)
        if outcome == "no recording":
            raise NoRecording(f"no recording {recording_token!r}")
        if outcome == "no track":
            raise NoTrack(f"recording {recording_token!r} has no track {track_token!r}")
        if outcome != "ok":
            raise CannotDelete(f"track {track_token!r} cannot be deleted: {outcome}")
        self.on_event(
            "RecordingConfig/DeleteTrack",
            {"RecordingToken": recording_token, "TrackToken": track_token},
        )

    async def set_track_configuration(
        self, recording_token: str, track_token: str, config: TrackConfiguration
    ) -> None:
        """SetTrackConfiguration: the TrackType given is ignored (it never changes)."""

        def write() -> str:
            with self._db.session() as session, session.begin():
                row = recording_row(session, recording_token)
                if row is None:
                    return "no recording"
                track = session.scalar(
                    select(models.Track).where(
                        models.Track.recording_id == row.id, models.Track.token == track_token
                    )
                )
                if track is None:
                    return "no track"
                track.description = cut_text(config.description)
                return "ok"

        async with self._lock:
            outcome = await self._db.run(write)
        if outcome == "no recording":
            raise NoRecording(f"no recording {recording_token!r}")
        if outcome == "no track":
            raise NoTrack(f"recording {recording_token!r} has no track {track_token!r}")
        track = await self.get_track(recording_token, track_token)
        self.on_event(
            "RecordingConfig/TrackConfiguration",
            {
                "RecordingToken": recording_token,
                "TrackToken": track_token,
                "Configuration": track.configuration,
            },
        )

    async def recording_options(self, token: str) -> dict[str, int]:
        """GetRecordingOptions' figures: spare jobs, spare tracks (each type alike)."""
        recording = await self.get_recording(token)
        jobs = len(await self.jobs())
        spare_tracks = max(0, self.limits.max_tracks - len(recording.tracks))
        return {
            "spare_jobs": max(0, self.limits.max_recording_jobs - jobs),
            "spare_total": spare_tracks,
            "spare_video": spare_tracks,
            "spare_audio": spare_tracks,
            "spare_metadata": spare_tracks,
        }
