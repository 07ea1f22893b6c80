"""The worker protocol."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request

from hmq import wire
from lambdas.auth import Principal
from lambdas.routes import base_url, ctx, principal
from lambdas.service import Context, submit, work

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.post("", response_model=wire.WorkerOut)
def register(body: wire.WorkerIn, p: Principal = Depends(principal), c: Context = Depends(ctx)) -> wire.WorkerOut:
    return work.register(c, p, body)


@router.get("", response_model=list[wire.WorkerInfo])
def list_workers(
    since: float = 0.0, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> list[wire.WorkerInfo]:
    """Admin: workers seen since ``since`` (unix time)."""
    return work.list_workers(c, p, since)


@router.get("/packagesets", response_model=wire.PackageSetsOut)
def package_sets(
    datacenter: str, python: str, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.PackageSetsOut:
    return work.package_sets(c, p, datacenter, python)


@router.post("/{worker_id}/claim", response_model=wire.ClaimOut)
def claim(
    worker_id: uuid.UUID,
    body: wire.ClaimIn,
    request: Request,
    p: Principal = Depends(principal),
    c: Context = Depends(ctx),
) -> wire.ClaimOut:
    return work.claim(c, p, worker_id, body, base_url(request))


@router.post("/{worker_id}/uploads", response_model=wire.UploadsOut)
def uploads(
    worker_id: uuid.UUID,
    body: wire.UploadsIn,
    request: Request,
    p: Principal = Depends(principal),
    c: Context = Depends(ctx),
) -> wire.UploadsOut:
    return submit.uploads(c, p, wire.UploadsIn(kind="results", count=body.count), base_url(request))


@router.post("/{worker_id}/heartbeat", response_model=wire.HeartbeatOut)
def heartbeat(
    worker_id: uuid.UUID, body: wire.HeartbeatIn, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.HeartbeatOut:
    return work.heartbeat(c, p, worker_id, body)


@router.post("/{worker_id}/corrupt", response_model=wire.CorruptOut)
def corrupt(
    worker_id: uuid.UUID, body: wire.CorruptIn, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.CorruptOut:
    """Report that the function object of a chunk whose tasks this worker holds is corrupt."""
    return work.report_corrupt(c, p, worker_id, body)


@router.post("/{worker_id}/complete", response_model=wire.CompleteOut)
def complete(
    worker_id: uuid.UUID, body: wire.CompleteIn, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.CompleteOut:
    return work.complete(c, p, worker_id, body)
