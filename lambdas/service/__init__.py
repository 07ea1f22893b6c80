"""The API's operations, free of HTTP: each takes a :class:`Context` and a principal.

``submit``, ``tags``, ``users`` and ``work`` orchestrate (roles, sessions, presigning); every
task state change they ask for is made by :mod:`lambdas.service.lifecycle`, and the sweeps run
from :mod:`lambdas.service.sweeps`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Union

from sqlalchemy.orm import Session

from hmq._errors import HmqError, StorageError
from lambdas.auth import Principal
from lambdas.db import Index
from lambdas.service.lifecycle import Clock, Lifecycle
from lambdas.service.metrics import Metrics
from lambdas.service.sweeps import Sweeps
from lambdas.service.wake import Wakeups, committed
from lambdas.settings import Settings
from lambdas.storage import ObjectStore

log = logging.getLogger("hmq.api")

Who = Union[Principal, Callable[[Session], Principal]]
"""The caller, or a check that authenticates it inside the operation's transaction (the
routes' :func:`lambdas.routes.signature`: key look-up, nonce and the operation's work in one
transaction, on one connection)."""


def caller(who: Who, session: Session) -> Principal:
    """The caller of an operation whose transaction is ``session``: authenticated in it when
    ``who`` is a check (an authentication failure rolls the transaction back: nothing is stored)."""
    return who if isinstance(who, Principal) else who(session)


@dataclass(frozen=True)
class Context:
    """What every operation works with: settings, index, object store, the task lifecycle, the
    sweeps, the fleet's metrics, the wake-ups of waiting requests, and the clock they all read.
    ``max_wait`` is the longest a request may wait on the API (shorter on Lambda, ``serverless``)."""

    settings: Settings
    index: Index
    store: ObjectStore
    lifecycle: Lifecycle
    sweeps: Sweeps
    metrics: Metrics
    wakeups: Wakeups
    max_wait: float

    @classmethod
    def create(
        cls, settings: Settings, index: Index, store: ObjectStore, clock: Clock = time.time, serverless: bool = False
    ) -> Context:
        lifecycle = Lifecycle(settings, clock)
        postgres = index.engine.dialect.name == "postgresql"
        if serverless:
            max_wait = settings.serverless_max_wait_seconds
            recheck = min(settings.wait_recheck_seconds, max(max_wait / 4, 0.05))
            wakeups = Wakeups(recheck, before_wait=index.release)
        else:
            max_wait = settings.max_wait_seconds
            wakeups = Wakeups(settings.wait_recheck_seconds, listen=index.engine if postgres else None)
        if postgres:  # other API processes hear of the changes by NOTIFY
            index.before_commit.append(wakeups.announce)
        index.after_commit.append(lambda session: wakeups.notify(committed(session)))
        index.on_dispose.append(wakeups.close)
        metrics = Metrics(settings.metrics_retention_seconds)
        sweeps = Sweeps(settings, index, lifecycle, store, metrics)
        return cls(settings, index, store, lifecycle, sweeps, metrics, wakeups, max_wait)

    def wait_for(self, asked: float) -> float:
        """How long a request that asked to wait ``asked`` seconds may wait."""
        return max(0.0, min(asked, self.max_wait))

    def now(self) -> float:
        """The API's time (``time.time`` unless the app was built with another clock)."""
        return self.lifecycle.clock()

    def presign_get(self, key: str, base_url: str) -> str:
        return self.store.presign_get(key, self.settings.presign_expiry_seconds, base_url)

    def presign_put(self, key: str, base_url: str) -> str:
        return self.store.presign_put(key, self.settings.presign_expiry_seconds, base_url)


@contextmanager
def objects_checked(check: Callable[[], None]) -> Iterator[None]:
    """Run the block while the objects a request names are looked up (see
    :meth:`ObjectStore.look_up`), then ``check`` them: it waits for the look-ups and raises
    if an object may not be registered, before the block's transaction commits. When the block
    fails with an error of its own, a failing check is the answer instead, so the caller hears
    what it would have heard had the objects been looked at first."""
    try:
        yield
    except HmqError:
        check()
        raise
    check()


def delete_objects(ctx: Context, keys: list[str]) -> None:
    """Delete objects after the index stopped referring to them. Best effort: the index is
    already committed, so a storage failure is logged, not turned into an error for the caller."""
    try:
        ctx.store.delete(keys)
    except StorageError as exc:
        log.warning("could not delete %d object(s), they stay in the store: %s", len(keys), exc)
