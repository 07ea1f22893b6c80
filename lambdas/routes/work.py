"""The worker protocol."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Request, Response

from hmq import wire
from lambdas.auth import Principal
from lambdas.routes import SIGNED, Check, answer, base_url, ctx, errors, principal, signature
from lambdas.service import Context, submit, work

router = APIRouter(prefix="/v1/workers", tags=["workers"], responses=errors(*SIGNED))


@router.post("", response_model=wire.WorkerOut)
def register(body: wire.WorkerIn, p: Principal = Depends(principal), c: Context = Depends(ctx)) -> wire.WorkerOut:
    return work.register(c, p, body)


@router.get("", response_model=list[wire.WorkerInfo])
def list_workers(
    since: float = Query(default=0.0, ge=0, le=1e12), p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> list[wire.WorkerInfo]:
    """Admin: workers seen since ``since`` (unix time)."""
    return work.list_workers(c, p, since)


@router.get("/packagesets", response_model=wire.PackageSetsOut)
def package_sets(
    datacenter: str, python: str, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.PackageSetsOut:
    return work.package_sets(c, p, datacenter, python)


@router.post("/{worker_id}/claim", response_model=wire.ClaimOut, responses=errors(404))
async def claim(
    worker_id: uuid.UUID,
    body: wire.ClaimIn,
    request: Request,
    check: Check = Depends(signature),
) -> Response:
    """Lease tasks; with ``wait``, the answer waits (holding no connection) until there are some.
    The context is read here, not as a dependency: a plain one would run in the threadpool."""
    out = await work.claim_waiting(ctx(request), check, worker_id, body, base_url(request), request.is_disconnected)
    return answer(out)


@router.post("/{worker_id}/uploads", response_model=wire.UploadsOut, responses=errors(404, 429))
def uploads(
    worker_id: uuid.UUID,
    body: wire.UploadsIn,
    request: Request,
    p: Principal = Depends(principal),
    c: Context = Depends(ctx),
) -> wire.UploadsOut:
    return submit.uploads(c, p, wire.UploadsIn(kind="results", count=body.count), base_url(request), worker_id)


@router.post("/{worker_id}/heartbeat", response_model=wire.HeartbeatOut, responses=errors(404))
def heartbeat(
    worker_id: uuid.UUID, body: wire.HeartbeatIn, request: Request, check: Check = Depends(signature)
) -> wire.HeartbeatOut:
    return work.heartbeat(ctx(request), check, worker_id, body)


@router.post("/{worker_id}/corrupt", response_model=wire.CorruptOut, responses=errors(404))
def corrupt(
    worker_id: uuid.UUID, body: wire.CorruptIn, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.CorruptOut:
    """Report that the function object of a chunk whose tasks this worker holds is corrupt."""
    return work.report_corrupt(c, p, worker_id, body)


@router.post("/{worker_id}/complete", response_model=wire.CompleteOut, responses=errors(404))
def complete(
    worker_id: uuid.UUID, body: wire.CompleteIn, request: Request, check: Check = Depends(signature)
) -> Response:
    """Record a worker's report, authenticated in the report's own transaction."""
    return answer(work.complete(ctx(request), check, worker_id, body))
