"""Order intake, last stage: enqueue. The job goes on its queue in one round trip: the records arq's
`enqueue_job` writes, checked and written atomically by one Lua script (`ENQUEUE_SCRIPT`).

Who runs the script is the caller's choice: the web sends it down its auto-pipelined connection
(it shares round trips with other requests' calls).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from ticker.core.contracts import Names
from ticker.infra.queue.enqueue import enqueue_call

RunScript = Callable[[list[str], list[Any]], Awaitable[Any]]  # (keys, args) -> ENQUEUE_SCRIPT's answer


class Enqueuer:
    """`await enqueuer(job_name, payload, job_id)`: True when a new job was queued, False when a job
    with this id already exists (a repeat)."""

    def __init__(self, names: Names, run_script: RunScript,
                 on_enqueued: Callable[[str], None] | None = None) -> None:
        self.names = names
        self.run_script = run_script
        self.on_enqueued = on_enqueued  # e.g. a metric per job name

    async def __call__(self, job_name: str, payload: BaseModel | dict[str, Any], job_id: str) -> bool:
        keys, args = enqueue_call(self.names, job_name, payload, job_id=job_id)
        new = bool(await self.run_script(keys, args))
        if new and self.on_enqueued is not None:
            self.on_enqueued(job_name)
        return new
