"""infra/docker-compose.yml holds together, and its processes stream against the stand-in.

There is no Docker engine here, so the file is checked for what Docker would only find at run time
(commands that parse, settings every process needs, addresses and ports that meet, start order),
and then its own commands run outside Docker in its own start order, with its own environment and
health checks, on this session's Redis and PostgreSQL (host names mapped to 127.0.0.1, fixed ports
to free ones), until option ticks with Greeks are published.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import redis as sync_redis
import yaml

from tests.dev.devrun import clean_env
from ticker.core.tick_envelope import unwrap
from ticker.infra.cli.main import COMMANDS
from ticker.infra.dev.embedded import free_port
from ticker.infra.runtime.settings import (
    DEV_ONLY_API_KEY,
    DEV_ONLY_ENCRYPTION_KEY,
    Settings,
    SettingsError,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "docker-compose.yml"
TICKER = str(Path(sys.executable).with_name("ticker"))
SERVERS = ("redis", "postgres")  # images of their own; every other service runs the ticker image
SOURCE_ROOMS = ("core", "infra", "streamer", "jobs", "http")
REQUIRES = re.compile(r"\.(?:require|url)\(([^)]*)\)")
STACK_DEADLINE = 240.0  # generous: six processes start on a busy two-core machine


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<: *ticker` merges


def ticker_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if name not in SERVERS}


def interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's `${VAR}` / `${VAR:-default}` as docker compose reads them from `shell`."""
    def one(m: re.Match[str]) -> str:
        name, default = m["name"], m["default"]
        got = shell.get(name, "")
        return got if got or default is None else default
    return re.sub(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}", one, value)


def container_env(service: dict[str, Any], shell: dict[str, str] | None = None) -> dict[str, str]:
    return {k: interpolate(str(v), shell or {}) for k, v in (service.get("environment") or {}).items()}


def required_settings() -> set[str]:
    """Every setting some process insists on (`settings.require(...)` / `settings.url(...)` in the source)."""
    names: set[str] = set()
    for room in SOURCE_ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            for call in REQUIRES.findall(path.read_text()):
                names.update(n for n in re.findall(r'"(\w+)"', call) if n in Settings.model_fields)
    return names


def test_every_service_command_is_a_ticker_subcommand_that_parses() -> None:
    for name, svc in ticker_services().items():
        command = svc["command"]
        assert command[0] == "ticker" and command[1] in COMMANDS, name
        done = subprocess.run([TICKER, *command[1:], "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{name}: {command}: {done.stderr}"


def test_every_process_gets_the_settings_it_requires() -> None:
    required = required_settings()
    assert {"redis_url", "database_url", "account_encryption_key"} <= required  # the scan finds them
    for name, svc in ticker_services().items():
        env = container_env(svc)
        missing = [n.upper() for n in sorted(required) if not env.get(n.upper())]
        assert not missing, f"{name} lacks {missing}"
        settings = load_settings(**{k.lower(): v for k, v in env.items()})
        assert settings.environment == "development" and not settings.kite_configured


def test_the_public_default_keys_are_refused_in_production() -> None:
    env = container_env(ticker_services()["web"], {"ENVIRONMENT": "production",
                                                  "ADMIN_API_KEY": "an-admin-key-of-more-than-32-distinct-chars"})
    assert env["API_KEY"] == DEV_ONLY_API_KEY and env["ACCOUNT_ENCRYPTION_KEY"] == DEV_ONLY_ENCRYPTION_KEY
    with pytest.raises(SettingsError, match="API_KEY is the public development key.*ACCOUNT_ENCRYPTION_KEY holds"):
        load_settings(**{k.lower(): v for k, v in env.items()})
    own = container_env(ticker_services()["web"], {"ENVIRONMENT": "production", "API_KEY": "x" * 40,
                                                  "ACCOUNT_ENCRYPTION_KEY": "y" * 10})
    assert own["API_KEY"] == "x" * 40  # the shell's values win over the defaults


def _port_of(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def test_addresses_and_ports_meet() -> None:
    services = ticker_services()
    sim = services["sim"]["command"]
    sim_port = int(sim[sim.index("--port") + 1])
    env = container_env(services["streamer"])
    for key in ("KITE_ROOT", "KITE_WS_ROOT", "KITE_LOGIN_ROOT"):
        assert _port_of(env[key]) == ("sim", sim_port), key
    assert f":{sim_port}/" in " ".join(services["sim"]["healthcheck"]["test"])
    assert f"127.0.0.1:{env['STREAMER_PORT']}/health" in " ".join(services["streamer"]["healthcheck"]["test"])
    web = services["web"]["command"]
    port = web[web.index("--port") + 1]
    assert services["web"]["ports"] == [f"127.0.0.1:{port}:{port}"]  # published to this machine only
    assert _port_of(env["REDIS_URL"]) == ("redis", 6379) and _port_of(env["DATABASE_URL"]) == ("postgres", 5432)
    pg = compose()["services"]["postgres"]["environment"]
    assert urlsplit(env["DATABASE_URL"]).path == f"/{pg['POSTGRES_DB']}"
    setup = services["sim-setup"]["command"]
    for flag in ("--seed", "--accounts"):  # the same accounts the stand-in accepts
        assert setup[setup.index(flag) + 1] == sim[sim.index(flag) + 1], flag


def test_setup_runs_after_the_worker_and_before_the_streamer() -> None:
    services = ticker_services()
    setup = services["sim-setup"]["depends_on"]
    assert setup["release"]["condition"] == "service_completed_successfully"
    assert setup["sim"]["condition"] == "service_healthy"
    assert setup["worker"]["condition"] == "service_started"  # it runs the instrument jobs on the worker
    assert services["streamer"]["depends_on"]["sim-setup"]["condition"] == "service_completed_successfully"
    for name, svc in services.items():
        if name not in ("sim", "release"):  # the stand-in needs no database
            assert svc["depends_on"]["release"]["condition"] == "service_completed_successfully", name


def test_env_file_is_the_repository_env_the_readme_names() -> None:
    for name, svc in ticker_services().items():
        assert svc["env_file"] == [{"path": "../.env", "required": False}], name
    assert (COMPOSE.parent / "../.env").resolve() == ROOT / ".env"
    deploying = (ROOT / "README.md").read_text().split("## Deploying", 1)[1].split("\n## ", 1)[0]
    assert "infra/docker-compose.yml" in deploying and "`.env`" in deploying and "infra/.env" not in deploying


# --- the stack itself, outside Docker ------------------------------------------------------------------


def start_order(services: dict[str, dict[str, Any]]) -> list[str]:
    """The services in an order compose could start them: each after what it depends on."""
    order: list[str] = []
    while len(order) < len(services):
        ready = [n for n, s in services.items() if n not in order
                 and all(d in order or d in SERVERS for d in s.get("depends_on") or {})]
        assert ready, f"a dependency cycle among {set(services) - set(order)}"
        order.append(ready[0])
    return order


def outside_docker(value: str, ports: dict[int, int], servers: dict[str, str]) -> str:
    """A compose value for this machine: the stack's servers ours, its hosts 127.0.0.1, its ports free ones."""
    for theirs, ours in servers.items():
        value = value.replace(theirs, ours)
    value = re.sub(r"(sim:|127\.0\.0\.1:)(\d+)", lambda m: m[1] + str(ports.get(int(m[2]), m[2])), value)
    value = value.replace("sim:", "127.0.0.1:").replace("0.0.0.0", "127.0.0.1")
    return str(ports[int(value)]) if value.isdigit() and int(value) in ports else value


@contextlib.contextmanager
def processes() -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        with log.open("wb") as out:  # in a folder of its own: no stray .env or .ticker/dev.json is read
            proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=log.parent)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(started):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


def wait_until(check: Callable[[], bool], what: str, deadline: float, logs: Path) -> None:
    while not check():
        if time.monotonic() > deadline:
            tails = {p.name: p.read_text(errors="replace")[-1500:] for p in sorted(logs.glob("*.log"))}
            raise AssertionError(f"{what}; logs:\n" + "\n".join(f"--- {k}\n{v}" for k, v in tails.items()))
        time.sleep(0.2)


def healthy(test: list[str], transform: Callable[[str], str], env: dict[str, str]) -> Callable[[], bool]:
    """The service's own compose health check, run here."""
    assert test[0] == "CMD" and test[1] == "python"
    args = [sys.executable, *(transform(a) for a in test[2:])]
    return lambda: subprocess.run(args, env=env, capture_output=True, timeout=30).returncode == 0


def test_the_stack_streams_option_ticks_from_the_stand_in(settings: Settings, tmp_path: Path) -> None:
    assert settings.redis_url and settings.database_url
    services = ticker_services()
    ports = {8780: free_port(), 8080: free_port(), 8081: free_port()}
    servers = {"redis://redis:6379/0": settings.redis_url,
               "postgresql://ticker:ticker@postgres:5432/ticker": settings.database_url}

    def here(value: str) -> str:
        return outside_docker(value, ports, servers)

    # this session's Redis is shared: the stack gets a key namespace and channel prefix of its own
    isolation = {"REDIS_NAMESPACE": settings.redis_namespace, "PUBLISH_CHANNEL_PREFIX": settings.publish_channel_prefix,
                 "HOST": "127.0.0.1", "LOG_FORMAT": "text"}
    deadline = time.monotonic() + STACK_DEADLINE
    running: dict[str, subprocess.Popen] = {}
    client = sync_redis.Redis.from_url(settings.redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(f"{settings.publish_channel_prefix}:options")
    try:
        with processes() as start:
            for name in start_order(services):
                svc = services[name]
                env = {**clean_env(tmp_path), **{k: here(v) for k, v in container_env(svc).items()}, **isolation}
                for dep, how in (svc.get("depends_on") or {}).items():
                    if dep in SERVERS:
                        continue
                    if how["condition"] == "service_completed_successfully":
                        proc = running[dep]
                        wait_until(lambda p=proc: p.poll() is not None, f"{dep} did not finish", deadline, tmp_path)
                        assert proc.returncode == 0, (tmp_path / f"{dep}.log").read_text(errors="replace")[-3000:]
                    elif how["condition"] == "service_healthy":
                        check = healthy(services[dep]["healthcheck"]["test"], here, env)
                        wait_until(check, f"{dep} never became healthy", deadline, tmp_path)
                args = [TICKER, *(here(a) for a in svc["command"][1:])]
                running[name] = start(args, env, tmp_path / f"{name}.log")

            def option_ticks() -> bool:
                msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                return bool(msg) and any(t.get("iv") is not None for t in unwrap(orjson.loads(msg["data"]))[0])

            wait_until(option_ticks, "no option ticks with an IV were published", deadline, tmp_path)
            streamer_env = {**clean_env(tmp_path), **isolation}
            wait_until(healthy(services["streamer"]["healthcheck"]["test"], here, streamer_env),
                       "the streamer's health check failed", deadline, tmp_path)
            setup_log = (tmp_path / "sim-setup.log").read_text()
            assert "registered the stand-in's accounts: sim1, sim2" in setup_log
            assert all(p.poll() is None for n, p in running.items() if n not in ("release", "sim-setup")), (
                {n: p.returncode for n, p in running.items()})
    finally:
        pubsub.close()
        client.close()
