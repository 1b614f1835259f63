"""Settings of their own for a test module (or a part of one) within the session's servers.

The session gives every run its own database and Redis db index; within a run, modules that start
workers, leave jobs queued or publish on channels use these so that no other module's worker,
consumer or listener ever sees their jobs, keys, messages or rows.
"""

from __future__ import annotations

import uuid
from typing import Any

from ticker.infra.runtime.settings import Settings


def own_namespace(settings: Settings, tag: str | None = None, **update: Any) -> Settings:
    """`settings` with a Redis key namespace and channel prefix of their own (`update` applied too)."""
    tag = tag or uuid.uuid4().hex[:6]
    return settings.model_copy(update={"redis_namespace": f"{settings.redis_namespace}-{tag}",
                                       "publish_channel_prefix": f"{settings.publish_channel_prefix}:{tag}",
                                       **update})
