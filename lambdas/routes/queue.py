"""Queue depth, for autoscalers (admin or worker credentials); the fleet's load over time, for admins."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Query

from hmq import wire
from lambdas.auth import Principal
from lambdas.routes import SIGNED, ctx, errors, principal
from lambdas.service import Context, metrics, queue

router = APIRouter(prefix="/v1", tags=["queue"], responses=errors(*SIGNED))


@router.get("/queue", response_model=wire.QueueDepth)
def depth(
    datacenter: Optional[str] = None,
    python: Optional[str] = None,
    p: Principal = Depends(principal),
    c: Context = Depends(ctx),
) -> wire.QueueDepth:
    """Open tasks grouped by placement (datacenters, Python, cores, memory) with the live workers
    that could run them; only tasks that may run in ``datacenter`` / on ``python`` when given."""
    return queue.depth(c, p, datacenter, python)


@router.get("/metrics", response_model=wire.MetricsOut)
def fleet(
    since: float = Query(default=0.0, ge=0, le=1e12), p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.MetricsOut:
    """Admin: the fleet's load per minute since ``since`` (unix time; at most the retention back),
    CPU time per user over it, and each datacenter's last-seen worker."""
    return metrics.read(c, p, since)
