"""Reporting outcomes: results grouped per user and tag into signed, encrypted result objects,
uploaded by presigned PUT, then recorded with the API in one request per
``WorkerSettings.objects_per_request`` objects."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hmq import formats, wire
from hmq._batching import batched
from hmq.credentials import WorkerCredentials
from worker.session import WorkerSession
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from worker.pool import Outcome
    from worker.prepare import Job

log = logging.getLogger("hmq.worker")


def report(
    session: WorkerSession,
    credentials: WorkerCredentials,
    settings: WorkerSettings,
    outcomes: list[tuple[Job, Outcome]],
    rejected: list[wire.RejectedTask],
    release: list[str],
) -> None:
    """Upload ``outcomes`` and tell the API about them, the ``rejected`` tasks and the tasks to
    ``release``. Raises on failure; a retry is safe (the API answers a repeated report as the
    first one, and uploads go to fresh keys)."""
    stored = _upload(session, credentials, settings, outcomes)
    for n, part in enumerate(batched(stored, settings.objects_per_request) if stored else [[]]):
        first = n == 0
        out = session.complete(
            wire.CompleteIn(
                results=part,
                rejected=rejected if first else [],
                release=[uuid.UUID(t) for t in release] if first else [],
            )
        )
        if out.ignored:
            log.info("%d results were not accepted (tasks cancelled, deleted or re-leased meanwhile)", len(out.ignored))


def _upload(
    session: WorkerSession,
    credentials: WorkerCredentials,
    settings: WorkerSettings,
    outcomes: list[tuple[Job, Outcome]],
) -> list[wire.StoredResults]:
    """One result object per user, tag and ``result_batch`` outcomes (fewer when they reach
    ``result_batch_bytes``), uploaded; what to report of each."""
    groups: dict[tuple[str, str], list[tuple[Job, Outcome]]] = defaultdict(list)
    for job, outcome in outcomes:
        groups[(job.user.key_id, job.tag)].append((job, outcome))
    parts = [
        part
        for items in groups.values()
        for part in _objects(items, settings.result_batch, settings.result_batch_bytes)
    ]
    slots = session.result_slots(len(parts), spare=settings.result_slot_spare) if parts else []
    stored: list[wire.StoredResults] = []
    for slot, (job0, records) in zip(slots, parts, strict=True):
        blob = formats.encode_results(credentials.identity, credentials.certificate, job0.user, job0.tag, records)
        session.transport.put_object(slot.url, blob)
        stored.append(
            wire.StoredResults(
                key=slot.key,
                tag=job0.tag,
                completed=[uuid.UUID(r.task_id) for r in records if r.kind == formats.KIND_RESULT],
                failed=[uuid.UUID(r.task_id) for r in records if r.kind != formats.KIND_RESULT],
            )
        )
    return stored


def _objects(
    items: list[tuple[Job, Outcome]], batch: int, max_bytes: int
) -> Iterator[tuple[Job, list[formats.ResultRecord]]]:
    """The compressed records of one user's tag, cut into objects of at most ``batch`` records
    and about ``max_bytes`` (an object ends with the record that reaches it)."""
    records: list[formats.ResultRecord] = []
    size = 0
    for _, o in items:
        payload = formats.compress(o.payload)
        output = formats.compress(o.log) if o.log else None
        records.append(
            formats.ResultRecord(o.task_id, formats.KIND_RESULT if o.ok else formats.KIND_ERROR, payload, output)
        )
        size += len(payload) + (len(output) if output else 0)
        if len(records) >= batch or size >= max_bytes:
            yield items[0][0], records
            records, size = [], 0
    if records:
        yield items[0][0], records
