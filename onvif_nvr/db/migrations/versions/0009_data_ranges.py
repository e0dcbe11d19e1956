"""data ranges: a row per recording and per track with what it holds, kept with the rows

* ``recording_data``: the first start and last end of a recording's readable segments;
* ``track_data``: a track's first and last stored ``RecordingHistory/Track/State`` event
  (time; the last one's data).

Maintained in the transactions that write segments and events (recording/index.py,
recording/data_ranges.py); filled here from the existing rows (two index probes per
recording, three per track).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_READABLE = "('writing', 'closed')"
_PROBE = (
    "(SELECT e.{column} FROM events e WHERE e.recording_id = p.recording_id "
    "AND e.topic = 'tns1:RecordingHistory/Track/State' AND e.track_token = p.track_token "
    "ORDER BY e.utc_ns {order}, e.id {order} LIMIT 1)"
)


def upgrade() -> None:
    op.create_table(
        "recording_data",
        sa.Column(
            "recording_id",
            sa.Integer(),
            sa.ForeignKey("recordings.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("earliest_ns", sa.BigInteger(), nullable=True),
        sa.Column("latest_ns", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "track_data",
        sa.Column(
            "recording_id",
            sa.Integer(),
            sa.ForeignKey("recordings.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("track_token", sa.String(64), primary_key=True),
        sa.Column("first_ns", sa.BigInteger(), nullable=False),
        sa.Column("last_ns", sa.BigInteger(), nullable=False),
        sa.Column("last_data", sa.JSON(), nullable=False),
    )
    op.execute(
        "INSERT INTO recording_data (recording_id, earliest_ns, latest_ns) SELECT r.id, "
        f"(SELECT s.start_wall_ns FROM segments s WHERE s.recording_id = r.id "
        f"AND s.state IN {_READABLE} ORDER BY s.start_wall_ns LIMIT 1), "
        f"(SELECT s.end_wall_ns FROM segments s WHERE s.recording_id = r.id "
        f"AND s.state IN {_READABLE} ORDER BY s.end_wall_ns DESC LIMIT 1) "
        "FROM recordings r"
    )
    op.execute(
        "INSERT INTO track_data (recording_id, track_token, first_ns, last_ns, last_data) "
        "SELECT p.recording_id, p.track_token, "
        + _PROBE.format(column="utc_ns", order="ASC")
        + ", "
        + _PROBE.format(column="utc_ns", order="DESC")
        + ", "
        + _PROBE.format(column="data", order="DESC")
        + " FROM (SELECT DISTINCT recording_id, track_token FROM events "
        "WHERE topic = 'tns1:RecordingHistory/Track/State') p"
    )


def downgrade() -> None:
    op.drop_table("track_data")
    op.drop_table("recording_data")
