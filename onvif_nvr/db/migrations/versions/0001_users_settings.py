"""users and settings

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("password_enc", sa.Text(), nullable=False),
        sa.Column("created_wall_ns", sa.BigInteger(), nullable=False),
        sa.Column("bootstrap", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("updated_wall_ns", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("settings")
    op.drop_table("users")
