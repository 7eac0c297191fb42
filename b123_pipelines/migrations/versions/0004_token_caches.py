"""token_caches: a tenant's OAuth token cache, encrypted, kept between runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Business Central is reached with Entra ID access tokens that live about an hour. MSAL keeps them in
a cache; storing it per tenant (Fernet ciphertext, like the credentials) lets the next run reuse a
token instead of asking Entra ID again, and keeps two tenants on the same Entra app apart. A new
table only: the running release does not know it and is not disturbed.
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token_caches",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("token_caches")
