"""Submitting, inspecting, pulling, cancelling and deleting tasks."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Query, Request, Response

from hmq import defaults, wire
from lambdas.auth import Principal
from lambdas.routes import SIGNED, Check, answer, base_url, ctx, errors, principal, signature
from lambdas.service import Context, submit, tags

router = APIRouter(prefix="/v1", tags=["tasks"], responses=errors(*SIGNED))


@router.post("/uploads", response_model=wire.UploadsOut, responses=errors(429))
def uploads(
    body: wire.UploadsIn, request: Request, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.UploadsOut:
    """Presigned PUT URLs for new objects under the caller's own prefix."""
    return submit.uploads(c, p, body, base_url(request))


@router.post("/functions", response_model=wire.FunctionOut)
def register_function(
    body: wire.FunctionIn, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.FunctionOut:
    return submit.register_function(c, p, body)


@router.get("/functions/{digest}", response_model=wire.FunctionOut, responses=errors(404))
def get_function(
    digest: str, request: Request, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.FunctionOut:
    return submit.get_function(c, p, digest, base_url(request))


@router.post("/tasks", response_model=wire.SubmitOut, responses=errors(409))
def submit_tasks(body: wire.SubmitIn, request: Request, check: Check = Depends(signature)) -> Response:
    """Register uploaded chunks' tasks. Idempotent: task ids already known are skipped.
    Authenticated in the submit's own transaction."""
    return answer(submit.submit(ctx(request), check, body))


@router.post("/tasks/status", response_model=wire.TaskStatusOut)
def task_status(
    body: wire.TaskSelection, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.TaskStatusOut:
    return tags.task_statuses(c, p, list(body.tasks or []))


@router.post("/tasks/results", response_model=wire.DonePage)
def task_results(
    body: wire.TaskSelection, request: Request, p: Principal = Depends(principal), c: Context = Depends(ctx)
) -> wire.DonePage:
    return tags.lookup(c, p, list(body.tasks or []), base_url(request))


@router.get("/results/{key:path}", response_model=wire.ResultObjectOut, responses=errors(404))
def result_object(key: str, p: Principal = Depends(principal), c: Context = Depends(ctx)) -> wire.ResultObjectOut:
    """Whether a result object of the caller's tasks is still in the object store."""
    return tags.result_object(c, p, key)


@router.post("/tasks/cancel", response_model=wire.TaskIdsOut, responses=errors(404))
def cancel(body: wire.TaskSelection, p: Principal = Depends(principal), c: Context = Depends(ctx)) -> wire.TaskIdsOut:
    return tags.cancel(c, p, body)


@router.post("/tasks/delete", response_model=wire.TaskIdsOut, responses=errors(404))
def delete(body: wire.TaskSelection, p: Principal = Depends(principal), c: Context = Depends(ctx)) -> wire.TaskIdsOut:
    return tags.delete_tasks(c, p, body)


@router.get("/tags", response_model=list[wire.TagSummary])
def list_tags(
    tag: Optional[str] = Query(default=None, pattern=wire.NAME_RE.pattern),
    p: Principal = Depends(principal),
    c: Context = Depends(ctx),
) -> list[wire.TagSummary]:
    """The caller's tags, oldest first, with their tasks per state (``tag=``: only that one)."""
    return tags.list_tags(c, p, tag)


@router.get("/tags/{tag}", response_model=wire.TagStatus, responses=errors(404))
def tag_status(tag: str, p: Principal = Depends(principal), c: Context = Depends(ctx)) -> wire.TagStatus:
    return tags.tag_status(c, p, tag)


@router.get("/tags/{tag}/tasks", response_model=wire.TaskPage, responses=errors(404))
def find_tasks(
    tag: str,
    after: Optional[str] = Query(default=None, pattern=wire.SEQ_RE),
    limit: int = Query(default=10_000, ge=1, le=defaults.MAX_TASKS_PER_REQUEST),
    p: Principal = Depends(principal),
    c: Context = Depends(ctx),
) -> wire.TaskPage:
    return tags.find_tasks(c, p, tag, after, limit)


@router.get("/tags/{tag}/done", response_model=wire.DonePage, responses=errors(404))
async def done(
    tag: str,
    request: Request,
    cursor: str = Query(default="", pattern=wire.CURSOR_RE),
    limit: int = Query(default=defaults.PULL_PAGE_TASKS, ge=1, le=defaults.MAX_TASKS_PER_REQUEST),
    wait: float = Query(default=0.0, ge=0, le=600),
    check: Check = Depends(signature),
) -> Response:
    """Finished tasks after ``cursor``, grouped by result object, with presigned GET URLs.
    With ``wait`` (seconds, cut to the API's limit), an answer with nothing new for a tag with
    open tasks waits, holding no connection, until some finish. Authenticated in the
    transaction of the first read."""
    c = ctx(request)
    page = await tags.done_waiting(c, check, tag, cursor, limit, base_url(request), wait, request.is_disconnected)
    return answer(page)
