"""Real `ticker web` / `ticker worker` processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp

from ticker.infra.runtime.settings import Settings

TICKER = str(pathlib.Path(sys.executable).with_name("ticker"))
ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process this test's servers and names, nothing inherited
    that could change its configuration."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH")}
    env.update({
        "ENVIRONMENT": settings.environment, "REDIS_URL": settings.redis_url or "",
        "DATABASE_URL": settings.database_url or "", "REDIS_NAMESPACE": settings.redis_namespace,
        "PUBLISH_CHANNEL_PREFIX": settings.publish_channel_prefix, "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING",
        "HTTP_RATE_LIMIT_PER_MINUTE": str(settings.http_rate_limit_per_minute),
    })
    if settings.account_encryption_key is not None:
        env["ACCOUNT_ENCRYPTION_KEY"] = settings.account_encryption_key.get_secret_value()
    env.update(extra)
    return env


class Child:
    def __init__(self, proc: asyncio.subprocess.Process, url: str | None = None) -> None:
        self.proc = proc
        self.url = url

    async def stop(self, timeout: float = 60.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise

    async def output(self) -> str:
        out = await self.proc.stdout.read() if self.proc.stdout else b""
        err = await self.proc.stderr.read() if self.proc.stderr else b""
        return (out + err).decode(errors="replace")


async def spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(TICKER, *args, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)


async def wait_listening(url: str, proc: asyncio.subprocess.Process, timeout: float = 60.0) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"process exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/openapi.json") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def web_process(env: dict[str, str]) -> AsyncIterator[Child]:
    port = free_port()
    proc = await spawn("web", "--host", "127.0.0.1", "--port", str(port), env=env)
    child = Child(proc, f"http://127.0.0.1:{port}")
    try:
        await wait_listening(child.url, proc)
        yield child
    finally:
        if proc.returncode is None:
            await child.stop()


@contextlib.asynccontextmanager
async def worker_process(env: dict[str, str]) -> AsyncIterator[Child]:
    proc = await spawn("worker", env=env)
    child = Child(proc)
    try:
        yield child
    finally:
        if proc.returncode is None:
            await child.stop()


@contextlib.asynccontextmanager
async def streamer_process(env: dict[str, str]) -> AsyncIterator[Child]:
    port = free_port()
    proc = await spawn("streamer", "--host", "127.0.0.1", "--port", str(port), env=env)
    child = Child(proc, f"http://127.0.0.1:{port}")
    try:
        yield child
    finally:
        if proc.returncode is None:
            await child.stop()
