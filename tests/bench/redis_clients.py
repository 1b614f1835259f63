"""The plain way to call the web's scripts, measured against the shipped one in the same run.

`PooledScripts` takes the web hot path's interface (`call`, `command`, `close`) on redis-py through
the client's connection pool, one checkout per call, where the shipped `AutoPipeline`
(ticker.infra.stores.redis) batches the calls, one write and its replies per batch.

`python -m tests.bench.redis_clients pooled --host H --port P` runs `ticker web` with it in place of
`AutoPipeline` (everything else as shipped).
"""

from __future__ import annotations

import sys
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from ticker.infra.stores.redis import Script


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


def main(argv: list[str]) -> int:
    import ticker.http.app as web_app
    from ticker.http import web_process

    kind, rest = argv[0], argv[1:]
    web_app.AutoPipeline = {"pooled": PooledScripts}[kind]  # type: ignore[misc]
    return web_process.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
