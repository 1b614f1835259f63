"""Enqueue-and-return: put a job on its queue by name and answer 202 with where to poll."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from ticker.http.middleware.errors import json_response
from ticker.http.state import Services
from ticker.infra.queue.enqueue import ENQUEUE_SCRIPT, enqueue_call
from ticker.infra.stores.redis import Script


def status_url(job_id: str) -> str:
    return f"/jobs/{job_id}"


ENQUEUE = Script(ENQUEUE_SCRIPT)


async def submit(svc: Services, job_name: str, payload: BaseModel | dict[str, Any], job_id: str) -> bool:
    """True when a new job was queued; False when this id already exists (a repeat)."""
    keys, args = enqueue_call(svc.names, job_name, payload, job_id=job_id)
    new = bool(await svc.pipe.call(ENQUEUE, keys, args))
    if new:
        svc.metrics.enqueued.labels(job_name).inc()
    return new


def accepted(job_id: str, new: bool, **extra: Any) -> web.Response:
    url = status_url(job_id)
    body = {"job_id": job_id, "status_url": url, "duplicate": not new, **extra}
    return json_response(body, status=202, headers={"Location": url})
