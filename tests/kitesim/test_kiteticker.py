"""The real KiteTicker (threaded, Twisted) against the stand-in, in a subprocess of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_kiteticker_gets_full_ticks_with_depth_and_parses_what_was_meant():
    proc = subprocess.run([sys.executable, "-m", "tests.kitesim.kiteticker_probe"], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no verdict from the probe:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    verdict = json.loads(lines[-1])
    assert verdict["full_with_depth"] == verdict["tokens"] == 100, verdict
    assert verdict["compared"] >= 2 and verdict["mismatched"] == 0, verdict
