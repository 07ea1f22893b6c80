"""The API's operations, free of HTTP: each takes a :class:`Context` and a principal."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

from hmq._errors import StorageError
from lambdas.db import Index
from lambdas.db.models import Batch
from lambdas.settings import Settings
from lambdas.storage import ObjectStore

log = logging.getLogger("hmq.api")


@dataclass(frozen=True)
class Context:
    settings: Settings
    index: Index
    store: ObjectStore
    sweep: Any = None  # lambdas.service.leases.Sweeper, set by the app factory

    def presign_get(self, key: str, base_url: str) -> str:
        return self.store.presign_get(key, self.settings.presign_expiry_seconds, base_url)

    def presign_put(self, key: str, base_url: str) -> str:
        return self.store.presign_put(key, self.settings.presign_expiry_seconds, base_url)


def insert_ignore(session: Session, table: Table, rows: list[dict[str, Any]], returning: Any = None) -> list[Any]:
    """INSERT rows, skipping those that conflict with a unique key; return ``returning`` of the
    inserted ones (SQLite and PostgreSQL both support ON CONFLICT DO NOTHING ... RETURNING)."""
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(table).on_conflict_do_nothing()
    if returning is None:
        session.execute(stmt, rows)
        return []
    return list(session.scalars(stmt.returning(returning), rows))


def new_batch(session: Session, tag_id: int, key: str | None = None) -> int:
    """A new batch id: the pull cursor advances over batches in creation order."""
    batch = Batch(tag_id=tag_id, key=key, created=time.time())
    session.add(batch)
    session.flush()
    return batch.id


def delete_objects(ctx: Context, keys: list[str]) -> None:
    """Delete objects after the index stopped referring to them. Best effort: the index is
    already committed, so a storage failure is logged, not turned into an error for the caller."""
    try:
        ctx.store.delete(keys)
    except StorageError as exc:
        log.warning("could not delete %d object(s), they stay in the store: %s", len(keys), exc)
