"""`ticker sim` as a process: flags, an accounts file, SIGTERM -> exit 0; bad options -> exit 2."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from kiteconnect import KiteConnect

from ticker.infra.kitesim.cli import config_from, parser
from ticker.infra.kitesim.config import SimConfig, load_accounts_file

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sim_process_serves_and_stops_on_sigterm(tmp_path):
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text("- api_key: desk_key\n  api_secret: desk_secret\n- api_key: other_key\n")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticker.infra.kitesim.cli", "--port", str(port), "--seed", "5",
         "--accounts", str(accounts), "--latency-ms", "1", "--tick-interval-ms", "100"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening" in line and "2 account(s)" in line, line
        expected = SimConfig(seed=5, accounts_file=accounts).resolve_accounts()
        assert expected[0].access_token not in line  # credentials are fetched, never printed
        url = f"http://127.0.0.1:{port}"
        assert requests.get(f"{url}/_sim/health", timeout=30).json()["status"] == "ok"
        served = requests.get(f"{url}/_sim/accounts", timeout=30).json()
        served = served.get("accounts", served) if isinstance(served, dict) else served
        # deterministic from seed + api_key, so `ticker dev` can hand the token to the other processes
        assert [a["access_token"] for a in served][0] == expected[0].access_token
        kite = KiteConnect("desk_key", expected[0].access_token, root=url)
        assert kite.profile()["user_id"] == "SIM001"
        state = requests.get(f"{url}/_sim/state", timeout=30).json()
        assert state["faults"]["latency_ms"] == 1 and [a["api_key"] for a in state["accounts"]] == [
            "desk_key", "other_key"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("argv", [["--profile", "huge"], ["--error-rate", "2"], ["--accounts", "/no/such.yaml"]])
def test_bad_options_exit_2(argv):
    proc = subprocess.run([sys.executable, "-m", "ticker.infra.kitesim.cli", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip()


def test_flags_map_onto_config():
    args = parser().parse_args(["--accounts", "3", "--drop-every", "5", "--market-hours", "nse",
                                "--redirect-url", "http://localhost:9/cb", "--order-rate-limit", "0"])
    config = config_from(args)
    assert config.accounts == 3 and config.drop_every_seconds == 5 and config.market_hours == "nse"
    keys = [a.api_key for a in config.resolve_accounts()]
    assert keys == ["sim_api_key", "sim_api_key_2", "sim_api_key_3"]
    assert config.resolve_accounts()[1].api_secret == "sim_api_secret_2"


def test_accounts_file_json_and_errors(tmp_path):
    good = tmp_path / "a.json"
    good.write_text('{"accounts": [{"api_key": "k1", "totp_secret": "JBSWY3DPEHPK3PXP"}]}')
    [acc] = load_accounts_file(good)
    assert acc.api_key == "k1" and acc.totp_secret == "JBSWY3DPEHPK3PXP"
    bad = tmp_path / "b.yaml"
    bad.write_text("just: a mapping\n")
    with pytest.raises(ValueError, match="list"):
        load_accounts_file(bad)
    dup = tmp_path / "c.yaml"
    dup.write_text("- api_key: k\n- api_key: k\n")
    with pytest.raises(ValueError):
        SimConfig(accounts=load_accounts_file(dup))
