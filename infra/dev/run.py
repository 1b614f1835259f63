"""`ticker dev`: the whole system on one machine, in one command.

Starts what is missing (embedded Redis and PostgreSQL when REDIS_URL / DATABASE_URL are unset, the
Kite stand-in with two accounts when no Kite credentials are set), migrates, loads instruments,
seeds the strike window, then runs the production processes — streamer, worker, scheduler, web —
as separate children with prefixed, coloured logs, the way a Procfile runner would. Ctrl-C stops
them in order and leaves nothing behind. `.ticker/dev.json` records where everything is; `ticker tail`,
`accounts` and `migrate` read it back (see devfile).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ticker.core.contracts import JOB_REBALANCE_STRIKES, JOB_REFRESH_INSTRUMENTS
from ticker.infra.dev import devfile, standin_setup
from ticker.infra.dev.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from ticker.infra.dev.supervise import ProcessSupervisor, Watched, process_exit
from ticker.infra.runtime.settings import Settings, SettingsError, load_settings
from ticker.infra.stores.crypto import new_key

COLOURS = ("\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[31m")
RESET = "\x1b[0m"
SIM_SEED, SIM_ACCOUNTS = standin_setup.SIM_SEED, standin_setup.SIM_ACCOUNTS
LOOPBACK = "127.0.0.1"  # everything dev starts listens here only: its keys are printed on the terminal
DEV_RATE_LIMIT_PER_MINUTE = 60_000  # the per-client quota in dev unless HTTP_RATE_LIMIT_PER_MINUTE is set


@dataclass
class Child:
    name: str
    args: list[str]
    proc: asyncio.subprocess.Process | None = None
    pump: asyncio.Task | None = None


@dataclass
class DevRun:
    folder: Path
    web_port: int
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # what dev.json holds (JSON values)
    children: list[Child] = field(default_factory=list)
    embedded: list[EmbeddedRedis | EmbeddedPostgres] = field(default_factory=list)
    colour_tty: bool = sys.stdout.isatty()
    generated_encryption_key: bool = False
    supervisor: ProcessSupervisor | None = None

    # --- output --------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"{'dev':>9} | {text}", flush=True)

    def _prefix(self, index: int, name: str) -> str:
        label = f"{name:>9} | "
        return f"{COLOURS[index % len(COLOURS)]}{label}{RESET}" if self.colour_tty else label

    async def _pump(self, index: int, child: Child) -> None:
        assert child.proc and child.proc.stdout
        prefix = self._prefix(index, child.name)
        async for line in child.proc.stdout:
            sys.stdout.write(prefix + line.decode(errors="replace"))
            sys.stdout.flush()

    # --- lifecycle -----------------------------------------------------------------------------
    def _supervise(self, item: Watched) -> None:
        if self.supervisor is None:
            self.supervisor = ProcessSupervisor(self.say)
        self.supervisor.watch(item)

    async def start_child(self, name: str, *args: str) -> Child:
        """Start a `ticker` subcommand as a supervised child (restarted when it dies)."""
        child = Child(name, [sys.executable, "-m", "ticker.infra.cli", *args])
        index = len(self.children)
        self.children.append(child)
        await self._spawn(index, child)

        async def ended() -> int | None:
            assert child.proc is not None
            return await child.proc.wait()

        self._supervise(Watched(name, ended, lambda: self._spawn(index, child)))
        return child

    async def _spawn(self, index: int, child: Child) -> None:
        if child.pump is not None:  # the last run's output is fully read before the next one starts
            with contextlib.suppress(Exception):
                await asyncio.wait_for(child.pump, 2)
        child.proc = await asyncio.create_subprocess_exec(
            *child.args, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
        child.pump = asyncio.create_task(self._pump(index, child), name=f"pump-{child.name}")

    def supervise_redis(self, server: EmbeddedRedis) -> None:
        async def ended() -> int | None:
            proc = server.proc
            if proc is None:
                return None
            await process_exit(proc.pid)
            return proc.wait()

        async def restart() -> None:
            await asyncio.to_thread(server.start)

        self._supervise(Watched("redis", ended, restart))

    def supervise_postgres(self, server: EmbeddedPostgres) -> None:
        async def ended() -> int | None:
            pid = server.pid
            if pid is not None:
                await process_exit(pid)
            return None

        self._supervise(Watched("postgres", ended, lambda: asyncio.to_thread(server.restart)))

    async def stop_children(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        for child in reversed(self.children):
            if child.proc and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                await asyncio.wait_for(child.proc.wait(), 15)
            except TimeoutError:
                self.say(f"{child.name} did not stop in 15 s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                await child.proc.wait()
            if child.pump:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(child.pump, 2)

    def stop_embedded(self) -> None:
        for server in reversed(self.embedded):
            server.stop()
        self.embedded.clear()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def already_running(folder: Path) -> dict | None:
    pid_file = folder / "dev.pid"
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().strip())
    except ValueError:
        return None
    if pid == os.getpid() or not _pid_alive(pid):
        return None
    info_file = folder / "dev.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    return {"pid": pid, **info}


def _persistent(folder: Path, name: str, make) -> str:
    """A value kept across runs (the encryption key must match the data already in the embedded database)."""
    path = folder / name
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


async def prepare(run: DevRun, args: argparse.Namespace) -> None:
    s = run.settings
    env = {k: v for k, v in os.environ.items()}
    if s.redis_url:
        env["REDIS_URL"] = s.redis_url
    else:
        server = EmbeddedRedis(run.folder / "redis", persist=True)
        run.embedded.append(server)
        env["REDIS_URL"] = server.start()
        run.supervise_redis(server)
        run.say(f"embedded Redis on {env['REDIS_URL']} (append-only file in {run.folder / 'redis'})")
    if s.tick_redis_url:  # the tick bus on a Redis of its own (never embedded: that one is REDIS_URL's)
        env["TICK_REDIS_URL"] = s.tick_redis_url
        run.info["tick_redis_url"] = s.tick_redis_url
        if s.tick_redis_cluster:  # one-shot commands (ticker tail) read it from dev.json too
            env["TICK_REDIS_CLUSTER"] = run.info["tick_redis_cluster"] = "true"
    if s.database_url:
        env["DATABASE_URL"] = s.database_url
    else:
        pg = EmbeddedPostgres(run.folder / "pg")
        run.embedded.append(pg)
        env["DATABASE_URL"] = pg.start()
        run.supervise_postgres(pg)
        run.say(f"embedded PostgreSQL in {run.folder / 'pg'}")
    worker_port = s.worker_port or free_port()
    api_key = s.api_key_value or _persistent(run.folder, "api_key", lambda: secrets.token_urlsafe(32))
    enc_key = (s.account_encryption_key.get_secret_value() if s.account_encryption_key
               else _persistent(run.folder, "encryption_key", new_key))
    run.generated_encryption_key = s.account_encryption_key is None
    # POST /auth/token signs with it; kept in the run folder so a restarted web honours old tokens
    jwt_secret = (s.jwt_secret.get_secret_value() if s.jwt_secret
                  else _persistent(run.folder, "jwt_secret", lambda: secrets.token_urlsafe(32)))
    streamer_port = args.streamer_port or s.streamer_port
    env.update({"API_KEY": api_key, "ACCOUNT_ENCRYPTION_KEY": enc_key, "JWT_SECRET": jwt_secret,
                "LOG_FORMAT": env.get("LOG_FORMAT", "text"),
                "STREAMER_PORT": str(streamer_port), "PYTHONUNBUFFERED": "1",
                "WORKER_PORT": str(worker_port), "WORKER_HOST": LOOPBACK, "HOST": LOOPBACK,
                # one developer's curl loops and job polls should not meet the production quota
                "HTTP_RATE_LIMIT_PER_MINUTE": str(s.http_rate_limit_per_minute
                                                  if "http_rate_limit_per_minute" in s.model_fields_set
                                                  else DEV_RATE_LIMIT_PER_MINUTE)})
    run.env = env
    # dev.json: what the one-shot commands (`ticker accounts`, `tail`, `migrate`) read back
    run.info.update({"redis_url": env["REDIS_URL"], "database_url": env["DATABASE_URL"],
                     "web_url": f"http://{LOOPBACK}:{run.web_port}", "api_key": api_key,
                     "admin_api_key": s.admin_api_key_value or api_key,
                     "account_encryption_key": enc_key, "redis_namespace": s.redis_namespace,
                     "publish_channel_prefix": s.publish_channel_prefix,
                     "http_rate_limit_per_minute": int(env["HTTP_RATE_LIMIT_PER_MINUTE"]),
                     "streamer_health": f"http://{LOOPBACK}:{streamer_port}/health",
                     "worker_health": f"http://{LOOPBACK}:{worker_port}/health"})


async def start_sim(run: DevRun, args: argparse.Namespace) -> None:
    """The stand-in with its accounts (registered by register_sim_accounts)."""
    # SIM_PORT counts only when set: the stand-in's own default (8780) may well be taken
    port = args.sim_port or (run.settings.sim_port if "sim_port" in run.settings.model_fields_set else free_port())
    sim = await run.start_child("sim", "sim", "--host", LOOPBACK, "--port", str(port), "--seed", str(SIM_SEED),
                                "--accounts", str(SIM_ACCOUNTS))
    url = f"http://127.0.0.1:{port}"
    await wait_http(f"{url}/_sim/health", "the Kite stand-in", sim)
    run.env.update({"KITE_ROOT": url, "KITE_WS_ROOT": f"ws://127.0.0.1:{port}/ws", "KITE_LOGIN_ROOT": url,
                    "KITE_API_KEY": "", "KITE_API_SECRET": "", "KITE_ACCESS_TOKEN": ""})
    run.info["sim_url"] = url


async def register_sim_accounts(run: DevRun, seed: int, count: int) -> None:
    from ticker.infra.stores.db import create_pool

    pool = await create_pool(run.env["DATABASE_URL"], min_size=1, max_size=2)
    try:
        ids = await standin_setup.register_sim_accounts(pool, run.env["ACCOUNT_ENCRYPTION_KEY"], seed, count)
    finally:
        await pool.close()
    run.say(f"registered {len(ids)} simulated Kite accounts ({', '.join(ids)})")


async def wait_http(url: str, what: str, child: Child | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child is not None and child.proc is not None and child.proc.returncode is not None:
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode} before answering")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status < 500:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f} s")


def ticker_command() -> str:
    script = Path(sys.executable).with_name("ticker")
    if not script.exists():
        return "ticker"
    rel = os.path.relpath(script)
    return rel if not rel.startswith("..") else str(script)


async def example_order(database_url: str) -> dict[str, object]:
    """A real, valid order for the banner: one lot of the streamed NIFTY call nearest the money."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT i.exchange, i.tradingsymbol, i.lot_size FROM instruments i JOIN subscriptions s USING"
            " (instrument_token) WHERE s.status = 'active' AND i.instrument_type = 'CE' AND i.name = 'NIFTY'"
            " ORDER BY i.expiry, abs(i.strike - (SELECT last_price FROM instruments WHERE tradingsymbol ="
            " 'NIFTY 50' LIMIT 1)) LIMIT 1")
    finally:
        await conn.close()
    if row is None:
        return {"exchange": "NSE", "tradingsymbol": "INFY", "quantity": 1, "product": "CNC"}
    return {"exchange": row["exchange"], "tradingsymbol": row["tradingsymbol"], "quantity": row["lot_size"],
            "product": "NRML"}


def cli_env(run: DevRun, *names: str) -> str:
    """What a shell here must set for `ticker <one-shot command>`: nothing when it finds our dev.json."""
    if devfile.find() == run.folder / devfile.DEV_FILE:
        return ""
    return "".join(f"{n.upper()}={run.info[n]} " for n in names)


def tick_bus_settings(run: DevRun) -> tuple[str, ...]:
    """What `ticker tail` needs: the tick bus's URL when it has one of its own."""
    names = ("redis_url", "tick_redis_url", "tick_redis_cluster")
    return tuple(n for n in names if n in run.info)


def tick_bus_line(run: DevRun) -> str:
    return f"\n  tick bus       {run.info['tick_redis_url']}" if "tick_redis_url" in run.info else ""


def banner(run: DevRun) -> str:
    web, key = run.info["web_url"], run.info["api_key"]
    order = json.dumps({**run.info["example_order"], "transaction_type": "BUY", "order_type": "MARKET"})
    enc = (f"{run.info['account_encryption_key']}   (generated; kept in {run.folder / 'encryption_key'})"
           if run.generated_encryption_key else "from ACCOUNT_ENCRYPTION_KEY")
    return f"""
ticker is running.
  web API        {web}   (X-API-Key: {key})
  health         {web}/health
  streamer       {run.info['streamer_health']}
  worker         {run.info['worker_health']}   (and /metrics)
  Kite stand-in  {run.info.get('sim_url', 'real Kite (credentials from settings)')}
  Redis          {run.info['redis_url']}{tick_bus_line(run)}
  PostgreSQL     {run.info['database_url']}
  accounts key   {enc}
  quota          {run.info['http_rate_limit_per_minute']} requests/min per client (job polls are free)
  details        {run.folder / 'dev.json'}   (read by `ticker tail`, `accounts`, `migrate` run here)

Try:
  1. place an order and poll it:
     curl -s -X POST {web}/orders -H 'X-API-Key: {key}' -H 'Content-Type: application/json' \\
       -d '{order}'
     curl -s '{web}/jobs/<job_id>?wait=10' -H 'X-API-Key: {key}'
  2. watch option ticks with Greeks:   {cli_env(run, *tick_bus_settings(run))}{ticker_command()} tail
  3. list the Kite accounts:
     {cli_env(run, 'database_url', 'account_encryption_key')}{ticker_command()} accounts list
  4. health:                           curl -s {web}/health

Ctrl-C stops everything.
"""


async def check_given_servers(settings: Settings) -> None:
    """REDIS_URL / DATABASE_URL given but out of reach: one line saying so, before anything starts."""
    from ticker.infra.cli.oneshot import CliContext, reach_postgres, reach_redis, reach_tick_bus

    ctx = CliContext(settings)
    if settings.redis_url:
        await (await reach_redis(ctx)).aclose()
    if settings.tick_redis_url:
        await (await reach_tick_bus(ctx)).aclose()
    if settings.database_url:
        await (await reach_postgres(ctx, max_size=1)).close()


async def supervise(run: DevRun, args: argparse.Namespace) -> int:
    from ticker.infra.stores.migrate import migrate

    await check_given_servers(run.settings)
    await prepare(run, args)
    applied = await migrate(run.env["DATABASE_URL"])
    run.say(f"migrations: {'applied ' + ', '.join(map(str, applied)) if applied else 'up to date'}")
    if not run.settings.kite_configured:
        await start_sim(run, args)
        await register_sim_accounts(run, SIM_SEED, SIM_ACCOUNTS)
    await run.start_child("worker", "worker", "--queue", "all")
    queue_settings = load_settings(redis_url=run.env["REDIS_URL"])
    result = await standin_setup.run_job(queue_settings, JOB_REFRESH_INSTRUMENTS, {})
    run.say(f"instruments refreshed: {result}")
    await run.start_child("streamer", "streamer")
    await run.start_child("scheduler", "scheduler")
    web = await run.start_child("web", "web", "--port", str(run.web_port), "--host", LOOPBACK)
    result = await standin_setup.run_job(queue_settings, JOB_REBALANCE_STRIKES, {})
    run.say(f"subscriptions seeded: added {result.get('added') if isinstance(result, dict) else result}")
    await wait_http(f"{run.info['web_url']}/health", "the web process", web)
    run.info["example_order"] = await example_order(run.env["DATABASE_URL"])
    devfile.write(run.folder / devfile.DEV_FILE, run.info)
    print(banner(run), flush=True)
    return await wait_for_exit(run)


async def wait_for_exit(run: DevRun) -> int:
    """Run until Ctrl-C / SIGTERM (exit 0) or a crash loop the supervisor gives up on (exit 1)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    assert run.supervisor is not None
    stopper = asyncio.create_task(stop.wait(), name="signal")
    gave_up = asyncio.create_task(run.supervisor.gave_up.wait(), name="gave-up")
    await asyncio.wait({stopper, gave_up}, return_when=asyncio.FIRST_COMPLETED)
    for task in (stopper, gave_up):
        task.cancel()
    if stop.is_set():
        run.say("stopping…")
        return 0
    run.say(f"{run.supervisor.reason}; stopping the rest")
    return 1


async def amain(args: argparse.Namespace) -> int:
    folder = Path(args.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    running = already_running(folder)
    if running:
        print(f"ticker dev is already running (pid {running['pid']}); web at {running.get('web_url', '?')}. "
              f"Stop it with Ctrl-C in its terminal (or kill {running['pid']}).", file=sys.stderr)
        return 1
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"ticker dev: {exc}", file=sys.stderr)
        return 2
    web_port = args.port or settings.port
    run = DevRun(folder=folder, web_port=web_port, settings=settings)
    (folder / "dev.pid").write_text(str(os.getpid()))
    try:
        return await supervise(run, args)
    except Exception as exc:  # start-up failure: say what, then clean up everything started
        run.say(f"start-up failed: {exc}")
        return 1
    finally:
        await run.stop_children()
        run.stop_embedded()
        with contextlib.suppress(FileNotFoundError):
            (folder / "dev.pid").unlink()
        run.say("stopped; nothing left running")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ticker dev", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="web port (default PORT, 8080)")
    parser.add_argument("--streamer-port", type=int, default=0,
                        help="streamer /health port (default STREAMER_PORT, 8081)")
    parser.add_argument("--sim-port", type=int, default=0, help="stand-in port (default SIM_PORT, else a free one)")
    parser.add_argument("--folder", default=".ticker", help="where embedded data and dev.json live")
    parser.add_argument("--env", action="store_true",
                        help="print `export U=... H=... A=...` (web URL, trading and admin key headers) for the "
                             "running dev found from here, for `eval \"$(ticker dev --env)\"`, and exit")
    args = parser.parse_args(argv)
    if args.env:
        return print_env()
    return asyncio.run(amain(args))


def print_env() -> int:
    path = devfile.find()
    if path is None or already_running(path.parent) is None:
        print("ticker dev --env: no running `ticker dev` here (no live .ticker/dev.pid in this folder or above); "
              "start one with `make dev`", file=sys.stderr)
        return 1
    print(devfile.shell_assignments(path), end="")
    return 0
