"""Profile G model: receivers (the cameras table), recordings, tracks, recording jobs;
segments belong to a recording

Every existing camera becomes a receiver, a recording named after it (tracks VIDEO001,
AUDIO001, META001, its retention as MaximumRetentionTime) and a recording job from that
receiver into that recording; its segments are given that recording.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

RECEIVER_TYPE = "http://www.onvif.org/ver10/schema/Receiver"
_PROTOCOL = {"tcp": "RTSP", "udp": "UDP", "http": "HTTP"}
_TRACKS = (("VIDEO001", "Video"), ("AUDIO001", "Audio"), ("META001", "Metadata"))


def upgrade() -> None:
    with op.batch_alter_table("cameras") as batch:
        batch.add_column(sa.Column("token", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("mode", sa.String(16), nullable=False, server_default="AlwaysConnect")
        )
        batch.add_column(
            sa.Column("auto_created", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("media_uri", sa.Text(), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("stream_type", sa.String(16), nullable=False, server_default="RTP-Unicast")
        )
        batch.add_column(sa.Column("protocol", sa.String(8), nullable=False, server_default="RTSP"))
        batch.create_unique_constraint("uq_cameras_token", ["token"])
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("source_name", sa.Text(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("max_retention_s", sa.BigInteger(), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column(
            "camera_id",
            sa.Integer(),
            sa.ForeignKey("cameras.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("created_wall_ns", sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "tracks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "recording_id",
            sa.Integer(),
            sa.ForeignKey("recordings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("track_type", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
    )
    op.create_table(
        "recording_jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "recording_id",
            sa.Integer(),
            sa.ForeignKey("recordings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("created_wall_ns", sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("segments") as batch:
        batch.add_column(sa.Column("recording_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_segments_recording", "recordings", ["recording_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_segments_recording_start", ["recording_id", "start_wall_ns"])
    _backfill()


def _backfill() -> None:
    connection = op.get_bind()
    meta = sa.MetaData()
    cameras = sa.Table("cameras", meta, autoload_with=connection)
    recordings = sa.Table("recordings", meta, autoload_with=connection)
    tracks = sa.Table("tracks", meta, autoload_with=connection)
    jobs = sa.Table("recording_jobs", meta, autoload_with=connection)
    segments = sa.Table("segments", meta, autoload_with=connection)
    for cam in connection.execute(sa.select(cameras)).mappings().all():
        receiver_token = f"RECEIVER_{cam['id']}"
        connection.execute(
            cameras.update()
            .where(cameras.c.id == cam["id"])
            .values(
                token=receiver_token,
                mode="AlwaysConnect" if cam["enabled"] else "NeverConnect",
                media_uri=cam["url"],
                protocol=_PROTOCOL.get(cam["transport"], "RTSP"),
            )
        )
        recording_id = connection.execute(
            recordings.insert().values(
                token="",
                source_id="",
                source_name=cam["name"],
                location="",
                description="",
                address="",
                content="",
                max_retention_s=cam["retention_s"],
                origin=cam["origin"],
                camera_id=cam["id"],
                created_wall_ns=cam["created_wall_ns"],
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        connection.execute(
            recordings.update()
            .where(recordings.c.id == recording_id)
            .values(token=f"RECORDING_{recording_id}")
        )
        for token, kind in _TRACKS:
            connection.execute(
                tracks.insert().values(
                    recording_id=recording_id, token=token, track_type=kind, description=""
                )
            )
        job_id = connection.execute(
            jobs.insert().values(
                token="",
                recording_id=recording_id,
                mode="Active" if cam["enabled"] else "Idle",
                priority=0,
                sources=[
                    {
                        "type": RECEIVER_TYPE,
                        "token": receiver_token,
                        "auto_created": False,
                        "tracks": [
                            {"source_tag": kind.lower(), "destination": token}
                            for token, kind in _TRACKS
                        ],
                    }
                ],
                created_wall_ns=cam["created_wall_ns"],
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        connection.execute(jobs.update().where(jobs.c.id == job_id).values(token=f"JOB_{job_id}"))
        connection.execute(
            segments.update()
            .where(segments.c.camera_id == cam["id"])
            .values(recording_id=recording_id)
        )


def downgrade() -> None:
    with op.batch_alter_table("segments") as batch:
        batch.drop_index("ix_segments_recording_start")
        batch.drop_constraint("fk_segments_recording", type_="foreignkey")
        batch.drop_column("recording_id")
    op.drop_table("recording_jobs")
    op.drop_table("tracks")
    op.drop_table("recordings")
    with op.batch_alter_table("cameras") as batch:
        batch.drop_constraint("uq_cameras_token", type_="unique")
        for column in ("protocol", "stream_type", "media_uri", "auto_created", "mode", "token"):
            batch.drop_column(column)
