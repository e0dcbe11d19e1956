"""Tables. Dialect-neutral: SQLite (embedded default) and PostgreSQL run the same schema."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    """An account shared by SOAP, RTSP and (later) the web UI."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: tt:UserLevel: Administrator, Operator, User.
    level: Mapped[str] = mapped_column(String(16))
    #: The password, encrypted with the box's secret key (both Digest and UsernameToken
    #: need the clear password to verify, so a one-way hash cannot be used).
    password_enc: Mapped[str] = mapped_column(Text)
    created_wall_ns: Mapped[int] = mapped_column(BigInteger)
    #: Created on an empty data dir from the operator's configuration.
    bootstrap: Mapped[bool] = mapped_column(Boolean, default=False)


class Setting(Base):
    """A persisted device setting (hostname, scopes, discovery mode, NTP, ...), as JSON."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    updated_wall_ns: Mapped[int] = mapped_column(BigInteger)


class DiscoveredDevice(Base):
    """An ONVIF device found by ``onvif-nvr discover``, kept for the camera set-up."""

    __tablename__ = "discovered_devices"

    endpoint: Mapped[str] = mapped_column(String(128), primary_key=True)
    xaddr: Mapped[str] = mapped_column(Text)
    #: ok, unreachable, unauthorized or error (then ``reason`` says why).
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    name: Mapped[str] = mapped_column(Text, default="")
    manufacturer: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(Text, default="")
    serial: Mapped[str] = mapped_column(Text, default="")
    firmware: Mapped[str] = mapped_column(Text, default="")
    scopes: Mapped[Any] = mapped_column(JSON, nullable=True)
    #: [{token, name, encoding, width, height, frame_rate, bitrate_kbps, uri}, ...]
    profiles: Mapped[Any] = mapped_column(JSON, nullable=True)
    seen_wall_ns: Mapped[int] = mapped_column(BigInteger)


class Camera(Base):
    """A camera stream: the ONVIF Receiver (RTSP URL without credentials; those are sealed).

    The table keeps its historical name; see docs/design/profile-g.md."""

    __tablename__ = "cameras"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    username: Mapped[str | None] = mapped_column(Text, nullable=True)
    password_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: "tcp" (RTP interleaved in RTSP), "udp" or "http" (RTSP tunnelled over HTTP).
    transport: Mapped[str] = mapped_column(String(8), default="tcp")
    #: "native" (the project's RTSP client) or "pyav" (FFmpeg's, the fallback).
    backend: Mapped[str] = mapped_column(String(8), default="native")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Keep recordings this long; 0 = until space is needed.
    retention_s: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Where the camera came from: "cli", "config", "demo" or "onvif".
    origin: Mapped[str] = mapped_column(String(8), default="cli")
    created_wall_ns: Mapped[int] = mapped_column(BigInteger)
    #: The ONVIF ReceiverToken (``RECEIVER_<id>``).
    token: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    #: tt:ReceiverMode: AlwaysConnect, NeverConnect or AutoConnect.
    mode: Mapped[str] = mapped_column(String(16), default="AlwaysConnect")
    #: Made by a recording job's AutoCreateReceiver (deleted with the job).
    auto_created: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The MediaUri as the client gave it, credentials removed (``url`` is normalized).
    media_uri: Mapped[str] = mapped_column(Text, default="")
    #: tt:StreamSetup: Stream (RTP-Unicast) and Transport Protocol (UDP, TCP, RTSP, HTTP)
    #: as given; ``transport`` is what the ingest uses.
    stream_type: Mapped[str] = mapped_column(String(16), default="RTP-Unicast")
    protocol: Mapped[str] = mapped_column(String(8), default="RTSP")


class Recording(Base):
    """An ONVIF recording: a container of tracks (RecordingControl §5)."""

    __tablename__ = "recordings"
    __table_args__ = {"sqlite_autoincrement": True}  # tokens are never reused

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    #: tt:RecordingSourceInformation, stored and echoed, never interpreted.
    source_id: Mapped[str] = mapped_column(Text, default="")
    source_name: Mapped[str] = mapped_column(Text, default="")
    location: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    address: Mapped[str] = mapped_column(Text, default="")
    content: Mapped[str] = mapped_column(Text, default="")
    #: MaximumRetentionTime in seconds; 0 = unlimited.
    max_retention_s: Mapped[int] = mapped_column(BigInteger, default=0)
    #: "onvif", "cli", "config", "demo" or "migration".
    origin: Mapped[str] = mapped_column(String(16), default="onvif")
    #: The receiver a camera command made this recording for (None: made over ONVIF).
    camera_id: Mapped[int | None] = mapped_column(
        ForeignKey("cameras.id", ondelete="SET NULL"), nullable=True
    )
    created_wall_ns: Mapped[int] = mapped_column(BigInteger)


class Track(Base):
    """A track of a recording; its token is unique within the recording only."""

    __tablename__ = "tracks"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"))
    token: Mapped[str] = mapped_column(String(64))
    #: Video, Audio or Metadata (never changes).
    track_type: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")


class RecordingJob(Base):
    """A recording job: moves data from sources (receivers) into a recording."""

    __tablename__ = "recording_jobs"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"))
    #: Idle or Active.
    mode: Mapped[str] = mapped_column(String(8), default="Active")
    #: Higher wins a track when several active jobs record into it.
    priority: Mapped[int] = mapped_column(default=0)
    #: [{"type": <tt:Receiver or tt:Profile URI>, "token": ..., "auto_created": bool,
    #:   "tracks": [{"source_tag": ..., "destination": <track token>}]}]
    sources: Mapped[Any] = mapped_column(JSON)
    created_wall_ns: Mapped[int] = mapped_column(BigInteger)


class Volume(Base):
    """A storage directory segments are written to."""

    __tablename__ = "volumes"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    #: Keep at least this much free; retention deletes the oldest data below it.
    min_free_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: "ok", "full", "failed" (the writer stopped: see ``status_reason``), "offline" (the
    #: directory lost its ``nvr-volume.json`` marker: an unmounted disk) or "foreign" (the
    #: marker names another volume or box). Only "ok" volumes are written to.
    status: Mapped[str] = mapped_column(String(8), default="ok")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    #: The id written into the volume's marker file; None for a row made before markers.
    uuid: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)


class Segment(Base):
    """One fMP4 file of one stream (see docs/design/storage.md)."""

    __tablename__ = "segments"
    __table_args__ = (
        Index("ix_segments_stream_start", "camera_id", "start_wall_ns"),
        Index("ix_segments_recording_start", "recording_id", "start_wall_ns"),
        Index("ix_segments_recording_end", "recording_id", "end_wall_ns"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    #: The stream (receiver) the data came from; also names the segment's directory.
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    #: The recording the data belongs to (None: recorded before recordings existed, or the
    #: recording was deleted while the segment's volume was offline).
    recording_id: Mapped[int | None] = mapped_column(
        ForeignKey("recordings.id", ondelete="SET NULL"), nullable=True
    )
    volume_id: Mapped[int] = mapped_column(ForeignKey("volumes.id"))
    #: writing, closed, deleting
    state: Mapped[str] = mapped_column(String(8), default="writing")
    start_wall_ns: Mapped[int] = mapped_column(BigInteger)
    end_wall_ns: Mapped[int] = mapped_column(BigInteger)
    start_90k: Mapped[int] = mapped_column(BigInteger)
    duration_90k: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Durable bytes of the file (init + complete fragments).
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    init_size: Mapped[int] = mapped_column(BigInteger, default=0)
    fragment_count: Mapped[int] = mapped_column(default=0)
    #: Codec parameters of the segment's tracks (JSON), for GetMediaAttributes and replay SDP.
    tracks: Mapped[Any] = mapped_column(JSON, nullable=True)


class Fragment(Base):
    """One moof+mdat of a segment: the unit of seeking and serving."""

    __tablename__ = "fragments"
    __table_args__ = (Index("ix_fragments_segment_start", "segment_id", "start_wall_ns"),)

    segment_id: Mapped[int] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(primary_key=True)
    start_wall_ns: Mapped[int] = mapped_column(BigInteger)
    start_90k: Mapped[int] = mapped_column(BigInteger)
    duration_90k: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    first_is_sync: Mapped[bool] = mapped_column(Boolean)
    sample_count: Mapped[int] = mapped_column()


class Gap(Base):
    """An explicit hole in a stream's recording (camera offline, disk full, restart)."""

    __tablename__ = "gaps"
    __table_args__ = (Index("ix_gaps_stream_start", "camera_id", "start_wall_ns"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    start_wall_ns: Mapped[int] = mapped_column(BigInteger)
    end_wall_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reason: Mapped[str] = mapped_column(String(16))


class Lock(Base):
    """A range that retention never deletes."""

    __tablename__ = "locks"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    start_wall_ns: Mapped[int] = mapped_column(BigInteger)
    end_wall_ns: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")


class Event(Base):
    """A recorded event (RecordingSearch §5.21: RecordingHistory topics), kept for
    FindEvents. ``utc_ns`` is the recording time the event describes (its UtcTime)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_recording_utc", "recording_id", "utc_ns"),
        Index("ix_events_topic_utc", "topic", "utc_ns"),
        # The Search service's (migration 0008): every recording in time order, and one
        # property's value at a time.
        Index("ix_events_utc", "utc_ns"),
        Index("ix_events_property", "recording_id", "topic", "track_token", "utc_ns"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"))
    recording_token: Mapped[str] = mapped_column(String(64))
    #: The track the event is about ("" for a recording's own events).
    track_token: Mapped[str] = mapped_column(String(64), default="")
    #: The topic as text, "tns1:RecordingHistory/Recording/State".
    topic: Mapped[str] = mapped_column(String(128))
    utc_ns: Mapped[int] = mapped_column(BigInteger)
    #: Initialized, Changed, Deleted (property events) or "" (others).
    operation: Mapped[str] = mapped_column(String(16), default="")
    #: [[name, value], ...] SimpleItems; ElementItems as [name, xml text, "element"].
    source: Mapped[Any] = mapped_column(JSON)
    data: Mapped[Any] = mapped_column(JSON)


class RecordingData(Base):
    """A recording's data range, kept with the segment rows (migration 0009): the first
    start and last end of its readable segments (``writing``, ``closed``), None when it has
    none. Written in the transactions that change those segments (recording/index.py), so
    GetRecordingSummary and FindRecordings read one row instead of probing segments."""

    __tablename__ = "recording_data"

    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    earliest_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    latest_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class TrackData(Base):
    """A track's stored ``RecordingHistory/Track/State`` history in short (migration 0009):
    the time of its first event and its last event with that event's data, by
    ``(utc_ns, id)`` as ``events`` orders them. Kept with the event rows (same transaction)."""

    __tablename__ = "track_data"

    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    track_token: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_ns: Mapped[int] = mapped_column(BigInteger)
    last_ns: Mapped[int] = mapped_column(BigInteger)
    #: The ``data`` of the last event ([[name, value], ...]).
    last_data: Mapped[Any] = mapped_column(JSON)


class RecordingSpan(Base):
    """A recording's contiguous recorded stretch (migration 0011): a maximal union of its
    readable segments with no gap of ``recording/spans.JOIN_NS`` or more. Kept with the
    segment rows (same transactions, recording/spans.py); the timeline reads these."""

    __tablename__ = "recording_spans"
    __table_args__ = {"sqlite_with_rowid": False}

    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    start_ns: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    end_ns: Mapped[int] = mapped_column(BigInteger)


class ApiGrant(Base):
    """A REST API session or bearer token (migration 0012), so a restart keeps users logged
    in. Only the secret's SHA-256 is stored: a copy of the database opens no session. Rows
    go with their user (``ON DELETE CASCADE``) and on a password change (system/users.py)."""

    __tablename__ = "api_grants"
    __table_args__ = (
        Index("ix_api_grants_username", "username"),
        Index("ix_api_grants_expires", "expires_s"),
    )

    #: Hex SHA-256 of the cookie value or the bearer token.
    secret_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: session, token
    kind: Mapped[str] = mapped_column(String(8))
    username: Mapped[str] = mapped_column(ForeignKey("users.username", ondelete="CASCADE"))
    #: Unix time (wall clock, seconds) after which it no longer opens anything.
    expires_s: Mapped[int] = mapped_column(BigInteger)
    #: The session's CSRF token ("" for a bearer token).
    csrf: Mapped[str] = mapped_column(String(64), default="")
    created_s: Mapped[int] = mapped_column(BigInteger)
    #: Last use, written at most once a minute (deferred with the index writes).
    last_used_s: Mapped[int] = mapped_column(BigInteger)


class MediaProfile(Base):
    """A Media/Media2 profile (migration 0010): a receiver's fixed profiles (``receiver_id``
    set; made on first use, see recording/media_profiles.py) and the ones clients create.
    ``configurations`` maps a configuration kind (``VideoSource``, ``VideoEncoder``...) to
    the token of the configuration the profile holds."""

    __tablename__ = "media_profiles"
    __table_args__ = {"sqlite_autoincrement": True}  # created tokens are never reused

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    receiver_id: Mapped[int | None] = mapped_column(
        ForeignKey("cameras.id", ondelete="CASCADE"), nullable=True
    )
    configurations: Mapped[Any] = mapped_column(JSON)


class MediaConfiguration(Base):
    """What a client set on a media configuration that the box can honour without
    transcoding (migration 0010): ``{"name": ..., "multicast": {address, port, ttl,
    auto_start}}``, by configuration token."""

    __tablename__ = "media_configurations"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    settings: Mapped[Any] = mapped_column(JSON)
