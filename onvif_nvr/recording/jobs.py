"""Recording jobs: which receivers feed which recording's tracks, and their state."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onvif_nvr.db import models
from onvif_nvr.errors import (
    BadConfiguration,
    BadMode,
    MaxRecordingJobs,
    NoRecording,
    NoRecordingJob,
)
from onvif_nvr.recording.media_config import IncompleteConfiguration, NoProfile
from onvif_nvr.recording.media_profiles import profile_receiver
from onvif_nvr.recording.profile_g import (
    JOB_MODES,
    PROFILE_TYPE,
    RECEIVER_TYPE,
    JobConfiguration,
    JobRow,
    JobSource,
    JobState,
    JobTrack,
    ReceiverConfiguration,
    ReceiverRow,
    RecordingJob,
    SourceState,
    TrackState,
    aggregate,
    check_receiver_configuration,
    job_by_token,
    job_from_row,
    job_row,
    jobs_using,
    receiver_row,
    recording_row,
    sources_from_json,
    sources_json,
    track_winners,
)
from onvif_nvr.recording.receivers import ReceiverOps


class JobOps(ReceiverOps):
    # -- recording jobs ----------------------------------------------------------------------
    async def jobs(self) -> list[RecordingJob]:
        def read() -> list[RecordingJob]:
            with self._db.session() as session:
                tokens = {
                    i: t
                    for i, t in session.execute(select(models.Recording.id, models.Recording.token))
                }
                query = select(models.RecordingJob).order_by(models.RecordingJob.id)
                return [job_from_row(j, tokens[j.recording_id]) for j in session.scalars(query)]

        return await self._db.run(read)

    async def get_job(self, token: str) -> RecordingJob:
        for job in await self.jobs():
            if job.token == token:
                return job
        raise NoRecordingJob(f"no recording job {token!r}")

    def _check_job(
        self, session: Session, config: JobConfiguration
    ) -> tuple[models.Recording, list[JobSource], int]:
        """The recording, the sources with tracks filled in (token None: a receiver to
        create) and how many receivers must be created."""
        recording = recording_row(session, config.recording_token)
        if recording is None:
            raise NoRecording(f"no recording {config.recording_token!r}")
        if config.mode not in JOB_MODES:
            raise BadConfiguration(f"Mode must be one of {', '.join(JOB_MODES)}")
        if config.priority < 0:
            raise BadConfiguration("Priority cannot be negative")
        if not config.sources:
            raise BadConfiguration(
                "the job has no source (give a SourceToken or AutoCreateReceiver)"
            )
        tracks = self._tracks_of(session).get(recording.id, {})
        sources: list[JobSource] = []
        creating = 0
        for source in config.sources:
            receiver: str | None = None
            if source.type == PROFILE_TYPE:
                if not source.token:
                    raise BadConfiguration("a source of type Profile needs a SourceToken")
                receiver = self._profile_receiver(session, source.token)
            elif source.type != RECEIVER_TYPE:
                raise BadConfiguration(f"unknown source type {source.type!r}")
            elif source.token:
                if receiver_row(session, source.token) is None:
                    raise BadConfiguration(f"no receiver {source.token!r}")
                receiver = source.token
            elif source.auto_create_receiver:
                creating += 1
            else:
                raise BadConfiguration("a source needs a SourceToken or AutoCreateReceiver")
            for track in source.tracks:
                if track.destination not in tracks:
                    raise BadConfiguration(
                        f"recording {recording.token} has no track {track.destination!r}"
                    )
            mapped = source.tracks or tuple(
                JobTrack(kind.lower(), token) for token, kind in tracks.items()
            )
            sources.append(
                JobSource(
                    source.token or None,
                    source.type,
                    bool(source.auto_create_receiver and receiver is None),
                    mapped,
                    receiver,
                )
            )
        return recording, sources, creating

    @staticmethod
    def _profile_receiver(session: Session, token: str) -> str:
        """The receiver a media profile source records (its video source's); the Media
        services' faults become the Recording service's BadConfiguration."""
        try:
            return profile_receiver(session, token)
        except NoProfile:
            raise BadConfiguration(f"no media profile {token!r}") from None
        except IncompleteConfiguration:
            raise BadConfiguration(
                f"media profile {token!r} has no video source configuration to record"
            ) from None

    def _auto_receivers(self, session: Session, sources: list[JobSource]) -> list[JobSource]:
        out = []
        for source in sources:
            if source.token is None:
                row = self._add_receiver(
                    session,
                    check_receiver_configuration(
                        ReceiverConfiguration("AutoConnect", ""), allow_empty_uri=True
                    ),
                    name=None,
                    username=None,
                    password=None,
                    auto_created=True,
                )
                source = dataclasses.replace(
                    source, token=row.token, auto_create_receiver=True, receiver=row.token
                )
            out.append(source)
        return out

    async def create_job(self, config: JobConfiguration) -> RecordingJob:
        """CreateRecordingJob; returns the configuration as used (all tracks of the
        recording when none are given, created receivers' tokens filled in)."""
        async with self._lock:

            def write() -> RecordingJob:
                with self._db.session() as session, session.begin():
                    count = session.scalar(select(func.count()).select_from(models.RecordingJob))
                    if (count or 0) >= self.limits.max_recording_jobs:
                        raise MaxRecordingJobs(
                            f"the box has its maximum of {self.limits.max_recording_jobs} jobs"
                        )
                    recording, sources, _ = self._check_job(session, config)
                    sources = self._auto_receivers(session, sources)
                    row = models.RecordingJob(
                        token="",
                        recording_id=recording.id,
                        mode=config.mode,
                        priority=config.priority,
                        sources=sources_json(sources),
                        created_wall_ns=self._clock.wall_ns(),
                    )
                    session.add(row)
                    session.flush()
                    row.token = f"JOB_{row.id}"
                    return job_from_row(row, recording.token)

            job = await self._db.run(write)
            await self._apply()
        self._job_changed(job)
        return job

    async def set_job_configuration(self, token: str, config: JobConfiguration) -> RecordingJob:
        """SetRecordingJobConfiguration; the RecordingToken cannot change. Receivers the
        job auto-created and no longer uses are deleted."""
        async with self._lock:

            def write() -> RecordingJob:
                with self._db.session() as session, session.begin():
                    row = job_by_token(session, token)
                    if row is None:
                        raise NoRecordingJob(f"no recording job {token!r}")
                    current = session.get(models.Recording, row.recording_id)
                    assert current is not None
                    if config.recording_token != current.token:
                        raise BadConfiguration("a recording job's RecordingToken cannot change")
                    _, sources, _ = self._check_job(session, config)
                    old = sources_from_json(row.sources)
                    auto: set[str | None] = {s.token for s in old if s.auto_create_receiver}
                    # A source that names a receiver this job made keeps it auto-created.
                    sources = [
                        dataclasses.replace(s, auto_create_receiver=True) if s.token in auto else s
                        for s in self._auto_receivers(session, sources)
                    ]
                    row.mode = config.mode
                    row.priority = config.priority
                    row.sources = sources_json(sources)
                    session.flush()
                    self._drop_unused_auto_receivers(session, auto - {s.feed for s in sources})
                    return job_from_row(row, current.token)

            job = await self._db.run(write)
            await self._apply()
        self._job_changed(job)
        return job

    async def set_job_mode(self, token: str, mode: str) -> None:
        if mode not in JOB_MODES:
            raise BadMode(f"Mode must be one of {', '.join(JOB_MODES)}")
        async with self._lock:

            def write() -> bool:
                with self._db.session() as session, session.begin():
                    row = job_by_token(session, token)
                    if row is None:
                        return False
                    row.mode = mode
                    return True

            if not await self._db.run(write):
                raise NoRecordingJob(f"no recording job {token!r}")
            await self._apply()
        self._job_changed(await self.get_job(token))

    async def delete_job(self, token: str) -> None:
        """DeleteRecordingJob, with the receivers it auto-created that no other job uses."""
        async with self._lock:

            def write() -> bool:
                with self._db.session() as session, session.begin():
                    row = job_by_token(session, token)
                    if row is None:
                        return False
                    self._delete_jobs(session, [row])
                    return True

            if not await self._db.run(write):
                raise NoRecordingJob(f"no recording job {token!r}")
            await self._apply()

    def _delete_jobs(self, session: Session, jobs: list[models.RecordingJob]) -> list[str]:
        auto: set[str | None] = set()
        for job in jobs:
            auto |= {s.token for s in sources_from_json(job.sources) if s.auto_create_receiver}
            session.delete(job)
        session.flush()
        return self._drop_unused_auto_receivers(session, auto)

    def _drop_unused_auto_receivers(self, session: Session, tokens: set[str | None]) -> list[str]:
        dropped = []
        for token in sorted(t for t in tokens if t):
            row = receiver_row(session, token)
            if row is not None and row.auto_created and not jobs_using(session, token):
                self._drop_receiver(session, row)
                dropped.append(token)
        session.flush()
        return dropped

    def _job_changed(self, job: RecordingJob) -> None:
        self.on_event(
            "RecordingConfig/RecordingJobConfiguration",
            {"RecordingJobToken": job.token, "Configuration": job.configuration},
        )

    async def job_state(self, token: str) -> JobState:
        """GetRecordingJobState, from the recorders' ingest. A track is Active while its
        source records — also a track whose media the stream does not carry (no audio,
        metadata): the job records all the source gives, nothing for that track is not an
        idle job — Idle when the job is Idle, its source is not streaming yet, or a job of
        higher priority records the track; Error when the receiver cannot deliver
        (NeverConnect, no MediaUri, connection failing)."""

        def read() -> tuple[JobRow, str, dict[tuple[int, str], int], dict[str, ReceiverRow]]:
            with self._db.session() as session:
                row = job_by_token(session, token)
                if row is None:
                    raise NoRecordingJob(f"no recording job {token!r}")
                recording = session.get(models.Recording, row.recording_id)
                assert recording is not None
                jobs = [job_row(j) for j in session.scalars(select(models.RecordingJob))]
                tracks = self._tracks_of(session)
                receivers = {
                    c.token: ReceiverRow(c.id, c.token, c.mode, c.url, c.auto_created)
                    for c in session.scalars(
                        select(models.Camera).where(models.Camera.token.is_not(None))
                    )
                    if c.token
                }
                return (
                    job_row(row),
                    recording.token,
                    track_winners(jobs, tracks),
                    receivers,
                )

        job, recording_token, winners, receivers = await self._db.run(read)
        sources = []
        for source in job.sources:
            receiver = receivers.get(source.feed)
            states = []
            for track in source.tracks:
                state, error = self._track_state(job, track, receiver, winners)
                states.append(TrackState(track.source_tag, track.destination, state, error))
            sources.append(
                SourceState(
                    source.token or "",
                    source.type,
                    aggregate(s.state for s in states),
                    tuple(states),
                )
            )
        return JobState(recording_token, aggregate(s.state for s in sources), tuple(sources))

    def _track_state(
        self,
        job: JobRow,
        track: JobTrack,
        receiver: ReceiverRow | None,
        winners: Mapping[tuple[int, str], int],
    ) -> tuple[str, str]:
        if job.mode != "Active" or winners.get((job.recording_id, track.destination)) != job.id:
            return "Idle", ""
        if receiver is None:
            return "Error", "the receiver does not exist"
        if receiver.mode == "NeverConnect":
            return "Error", "the receiver is in NeverConnect mode"
        if not receiver.url:
            return "Error", "the receiver has no MediaUri"
        status = self._runtime.status((job.id, receiver.id)) if self._runtime else None
        if status is None:
            return "Idle", ""
        # Reconnecting after a failure is still the failure until data flows again.
        if status.state == "retrying" or (status.state == "connecting" and status.error):
            return "Error", status.error or "the connection failed"
        if status.state != "recording":
            return "Idle", ""
        return "Active", ""
