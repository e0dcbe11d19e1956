"""cameras

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cameras",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("password_enc", sa.Text(), nullable=True),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("backend", sa.String(8), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("retention_s", sa.BigInteger(), nullable=False),
        sa.Column("origin", sa.String(8), nullable=False),
        sa.Column("created_wall_ns", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cameras")
