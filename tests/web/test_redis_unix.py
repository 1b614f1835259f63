"""A Redis reached over a unix socket (`unix:///path/redis.sock?db=3`), as some hosts offer it: the
client every process opens (`connect`) and the web's hot path both take the URL as it is."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from redis.exceptions import RedisError

from tests.waiting import wait_for
from ticker.infra.stores.redis import AutoPipeline, Script, connect


async def test_a_unix_socket_url_works_for_every_client(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"unix://{sock}?db=3"
    client = connect(url)
    pipe = AutoPipeline(url)
    try:
        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except (OSError, RedisError):  # not listening yet, or still starting
                return False

        await wait_for(answers, timeout=30)
        await client.set("k", b"v")
        assert await client.get("k") == b"v"
        assert await pipe.call(Script("return redis.call('GET', KEYS[1])"), ["k"], []) == b"v"
        info = await client.info("keyspace")
        assert "db3" in info  # the URL's db was used
    finally:
        await pipe.close()
        await client.aclose()
        proc.terminate()
        proc.wait(10)
