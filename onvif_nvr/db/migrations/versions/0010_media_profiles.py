"""media profiles: the Media/Media2 profiles and the settings of their configurations

* ``media_profiles``: every media profile — the fixed ones the box makes for each receiver
  (``receiver_id`` set, created on first use) and the ones clients create — with its name
  and its configuration tokens by kind (``{"VideoSource": "VSC_1", ...}``);
* ``media_configurations``: what clients may change on a configuration without
  transcoding (its Name, its multicast address/port/TTL/AutoStart), by configuration token.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media_profiles",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column(
            "receiver_id",
            sa.Integer(),
            sa.ForeignKey("cameras.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("configurations", sa.JSON(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "media_configurations",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("settings", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("media_configurations")
    op.drop_table("media_profiles")
