"""Enqueue-and-return: put a job on its queue by name (the order intake's enqueue stage, run down the
auto-pipelined connection) and answer 202 with where to poll."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from ticker.http.middleware.errors import json_response
from ticker.http.state import Services
from ticker.infra.orders.enqueuer import RunScript
from ticker.infra.queue.enqueue import ENQUEUE_SCRIPT
from ticker.infra.stores.redis import AutoPipeline, Script


def status_url(job_id: str) -> str:
    return f"/jobs/{job_id}"


ENQUEUE = Script(ENQUEUE_SCRIPT)


def pipe_script(pipe: AutoPipeline) -> RunScript:
    """The intake's enqueue script sent down the auto-pipelined connection (it shares round trips)."""
    async def run(keys: list[str], args: list[Any]) -> Any:
        return await pipe.call(ENQUEUE, keys, args)

    return run


async def submit(svc: Services, job_name: str, payload: BaseModel | dict[str, Any], job_id: str) -> bool:
    """True when a new job was queued; False when this id already exists (a repeat)."""
    return await svc.enqueue(job_name, payload, job_id)


def accepted(job_id: str, new: bool, **extra: Any) -> web.Response:
    url = status_url(job_id)
    body = {"job_id": job_id, "status_url": url, "duplicate": not new, **extra}
    return json_response(body, status=202, headers={"Location": url})
