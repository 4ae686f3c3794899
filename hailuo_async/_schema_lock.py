"""The lock every creator of one of this library's PostgreSQL schemas takes first.

The journal and the shared limits may create the same schema at the same moment (N workers
starting on an empty database); ``CREATE SCHEMA IF NOT EXISTS`` can still collide, so both
take this transaction-scoped advisory lock, keyed by the schema's name, before they look.
"""

from __future__ import annotations

__all__ = ["SCHEMA_LOCK"]

SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('hailuo-async schema ' || %s))"
