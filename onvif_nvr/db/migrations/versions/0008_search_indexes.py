"""search indexes: what the Search service's queries read by

* ``events(utc_ns)``: FindEvents over every recording, in time order, one page at a time;
* ``events(recording_id, topic, track_token, utc_ns)``: a property's value at a time (the
  virtual start-state events, a track's DataFrom/DataTo);
* ``segments(recording_id, end_wall_ns)``: a recording's LatestRecording.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_utc", "events", ["utc_ns"])
    op.create_index(
        "ix_events_property", "events", ["recording_id", "topic", "track_token", "utc_ns"]
    )
    op.create_index("ix_segments_recording_end", "segments", ["recording_id", "end_wall_ns"])


def downgrade() -> None:
    op.drop_index("ix_segments_recording_end", "segments")
    op.drop_index("ix_events_property", "events")
    op.drop_index("ix_events_utc", "events")
