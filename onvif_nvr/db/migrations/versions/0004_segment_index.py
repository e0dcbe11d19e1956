"""segment index: volumes, segments, fragments, gaps, locks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("path", sa.Text(), nullable=False, unique=True),
        sa.Column("min_free_bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=False),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "camera_id",
            sa.Integer(),
            sa.ForeignKey("cameras.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("volume_id", sa.Integer(), sa.ForeignKey("volumes.id"), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("start_wall_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_wall_ns", sa.BigInteger(), nullable=False),
        sa.Column("start_90k", sa.BigInteger(), nullable=False),
        sa.Column("duration_90k", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("init_size", sa.BigInteger(), nullable=False),
        sa.Column("fragment_count", sa.Integer(), nullable=False),
        sa.Column("tracks", sa.JSON(), nullable=True),
    )
    op.create_index("ix_segments_stream_start", "segments", ["camera_id", "start_wall_ns"])
    op.create_table(
        "fragments",
        sa.Column(
            "segment_id",
            sa.Integer(),
            sa.ForeignKey("segments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("start_wall_ns", sa.BigInteger(), nullable=False),
        sa.Column("start_90k", sa.BigInteger(), nullable=False),
        sa.Column("duration_90k", sa.BigInteger(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("first_is_sync", sa.Boolean(), nullable=False),
        sa.Column("sample_count", sa.Integer(), nullable=False),
    )
    op.create_index("ix_fragments_segment_start", "fragments", ["segment_id", "start_wall_ns"])
    op.create_table(
        "gaps",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "camera_id",
            sa.Integer(),
            sa.ForeignKey("cameras.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("start_wall_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_wall_ns", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(16), nullable=False),
    )
    op.create_index("ix_gaps_stream_start", "gaps", ["camera_id", "start_wall_ns"])
    op.create_table(
        "locks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "camera_id",
            sa.Integer(),
            sa.ForeignKey("cameras.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("start_wall_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_wall_ns", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    for table in ("locks", "gaps", "fragments", "segments", "volumes"):
        op.drop_table(table)
