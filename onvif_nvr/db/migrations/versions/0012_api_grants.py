"""api grants: the REST API's sessions and bearer tokens, kept across restarts

``api_grants``: per session or token the SHA-256 of its secret (never the secret), its user
(deleted with the user), its expiry in wall-clock seconds, the session's CSRF token, when it
was made and last used.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_grants",
        sa.Column("secret_sha256", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column(
            "username",
            sa.String(64),
            sa.ForeignKey("users.username", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("expires_s", sa.BigInteger(), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_s", sa.BigInteger(), nullable=False),
        sa.Column("last_used_s", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_api_grants_username", "api_grants", ["username"])
    op.create_index("ix_api_grants_expires", "api_grants", ["expires_s"])


def downgrade() -> None:
    op.drop_index("ix_api_grants_expires", "api_grants")
    op.drop_index("ix_api_grants_username", "api_grants")
    op.drop_table("api_grants")
