"""Alembic migrations of the genpromp-annotate store (shipped as a package so `db upgrade` finds them)."""
