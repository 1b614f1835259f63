"""redis-py stand-ins for the hand-written fast paths, measured against them in the same run.

`PooledScripts` and `BatchedScripts` take the web hot path's `Pipe` interface (`call`, `command`,
`close`) on redis-py with hiredis: the first through the client's connection pool (one checkout per
call), the second collecting the calls of one event-loop turn into one redis-py pipeline
(`execute_command` batching, `raise_on_error=False`, replies handed back to each caller).

`python -m tests.bench.redis_clients pooled|batched --host H --port P` runs `ticker web` with one of
them in place of the fast path (everything else as shipped).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from ticker.infra.stores.redis_fast import Script


class PooledScripts:
    def __init__(self, url: str, max_connections: int = 64) -> None:
        self.redis = Redis.from_url(url, max_connections=max_connections, socket_connect_timeout=3)

    async def command(self, *args: Any) -> Any:
        return await self.redis.execute_command(*args)

    async def call(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.redis.eval(script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        await self.redis.aclose()


class BatchedScripts(PooledScripts):
    def __init__(self, url: str, max_connections: int = 64) -> None:
        super().__init__(url, max_connections)
        self._batch: list[tuple[tuple[Any, ...], asyncio.Future]] = []

    async def command(self, *args: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._batch.append((args, future))
        if len(self._batch) == 1:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._run()))
        reply = await future
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def call(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.command("EVAL", script.source, len(keys), *keys, *args)

    async def _run(self) -> None:
        batch, self._batch = self._batch, []
        pipe = self.redis.pipeline(transaction=False)
        for args, _ in batch:
            pipe.execute_command(*args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: every caller in the batch hears it
            replies = [exc] * len(batch)
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():
                future.set_result(reply)


def main(argv: list[str]) -> int:
    import ticker.http.app as web_app
    from ticker.http import web_process

    kind, rest = argv[0], argv[1:]
    web_app.Pipe = {"pooled": PooledScripts, "batched": BatchedScripts}[kind]  # type: ignore[attr-defined]
    return web_process.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
