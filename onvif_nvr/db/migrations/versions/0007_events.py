"""events: the RecordingHistory events of each recording, for FindEvents

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-15
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "recording_id",
            sa.Integer(),
            sa.ForeignKey("recordings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("recording_token", sa.String(64), nullable=False),
        sa.Column("track_token", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(128), nullable=False),
        sa.Column("utc_ns", sa.BigInteger(), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_events_recording_utc", "events", ["recording_id", "utc_ns"])
    op.create_index("ix_events_topic_utc", "events", ["topic", "utc_ns"])


def downgrade() -> None:
    op.drop_index("ix_events_topic_utc", "events")
    op.drop_index("ix_events_recording_utc", "events")
    op.drop_table("events")
