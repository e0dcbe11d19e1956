"""recording spans: each recording's contiguous recorded stretches, kept with the segments

``recording_spans``: per recording, the maximal unions of its readable segments with no gap
of a second or more (recording/spans.py ``JOIN_NS``), so that the timeline reads about one
row per continuous stretch instead of one per segment. Maintained in the transactions that
write segments (recording/index.py, recording/spans.py); filled here from the existing
segments in one pass (window functions over ``ix_segments_recording_start``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: recording/spans.py JOIN_NS when this migration was written (a migration is frozen).
_JOIN_NS = 10**9


def upgrade() -> None:
    op.create_table(
        "recording_spans",
        sa.Column(
            "recording_id",
            sa.Integer(),
            sa.ForeignKey("recordings.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("start_ns", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO recording_spans (recording_id, start_ns, end_ns) "
        "WITH ordered AS ("
        " SELECT id, recording_id, start_wall_ns AS s, end_wall_ns AS e, "
        " MAX(end_wall_ns) OVER (PARTITION BY recording_id ORDER BY start_wall_ns, id "
        " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_e "
        " FROM segments WHERE recording_id IS NOT NULL AND state IN ('writing', 'closed')), "
        "flagged AS ("
        f" SELECT recording_id, s, e, SUM(CASE WHEN before_e IS NULL OR s - before_e >= {_JOIN_NS} "
        " THEN 1 ELSE 0 END) OVER (PARTITION BY recording_id ORDER BY s, id "
        " ROWS UNBOUNDED PRECEDING) AS piece FROM ordered) "
        "SELECT recording_id, MIN(s), MAX(e) FROM flagged GROUP BY recording_id, piece"
    )


def downgrade() -> None:
    op.drop_table("recording_spans")
