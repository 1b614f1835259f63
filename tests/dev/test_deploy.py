"""Deployment files: the Procfile under a real Procfile runner, the image and the compose stack."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HONCHO = str(Path(sys.executable).with_name("honcho"))


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def test_procfile_declares_every_process() -> None:
    assert procfile() == {
        "release": "ticker migrate",
        "web": "ticker web --port $PORT",
        "streamer": "ticker streamer",
        "worker": "ticker worker",
        "scheduler": "ticker scheduler",
    }


def test_honcho_accepts_the_procfile_with_an_env_file(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text((ROOT / "Procfile").read_text())
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    proc = subprocess.run([HONCHO, "check"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Valid procfile" in proc.stderr + proc.stdout


def test_every_process_command_exists() -> None:
    ticker = str(Path(sys.executable).with_name("ticker"))
    for name, command in procfile().items():
        args = shlex.split(command.replace("$PORT", "8080"))
        assert args[0] == "ticker"
        proc = subprocess.run([ticker, args[1], "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"


def test_image_runs_unprivileged_with_a_healthcheck() -> None:
    text = (ROOT / "infra" / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/health" in text
    assert "-slim" in text


def test_compose_runs_redis_postgres_and_each_process() -> None:
    doc = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"redis", "postgres"} <= set(services)
    for name, command in procfile().items():
        got = services[name]["command"]
        assert got[:2] == shlex.split(command)[:2], name


def test_compose_redis_keeps_queued_jobs_across_a_restart() -> None:
    doc = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())
    redis = doc["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in doc["volumes"]
