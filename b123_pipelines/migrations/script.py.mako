"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Only nullable or defaulted additions, so code one release older keeps working while this runs
(production upgrades before it deploys). Write every table and column out: never import tables.py
here except tables.Money, so this revision never changes when tables.py does.
"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}
from b123_pipelines.tables import Money  # noqa: F401  NUMERIC(18,2) on PostgreSQL, integer øre on SQLite

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
