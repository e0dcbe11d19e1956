"""discovered devices

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "discovered_devices",
        sa.Column("endpoint", sa.String(128), primary_key=True),
        sa.Column("xaddr", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("name", sa.Text(), nullable=False, server_default=""),
        sa.Column("manufacturer", sa.Text(), nullable=False, server_default=""),
        sa.Column("model", sa.Text(), nullable=False, server_default=""),
        sa.Column("serial", sa.Text(), nullable=False, server_default=""),
        sa.Column("firmware", sa.Text(), nullable=False, server_default=""),
        sa.Column("scopes", sa.JSON(), nullable=True),
        sa.Column("profiles", sa.JSON(), nullable=True),
        sa.Column("seen_wall_ns", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("discovered_devices")
