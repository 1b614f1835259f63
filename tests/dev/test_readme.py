"""The README's shell examples run, as written, against a running `ticker dev`.

Every fenced ```bash / ```sh / ```shell / ```console block of README.md runs, in order, in one
`bash -euo pipefail` session started in the dev's folder (where a user runs them after `make dev`),
so a variable set by one block (the job id of a placed order) is there for the next. A block that
cannot run here (`make dev` itself, a deployment's settings) says so in the README with an HTML
comment on the line before it, `<!-- not run: <reason> -->`; the test lists those. Each block must
exit 0, and no JSON it prints may be an error envelope or a job that failed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.dev.shared_dev import TICKER, RunningDev

README = Path(__file__).resolve().parents[2] / "README.md"
SHELL_FENCES = ("bash", "sh", "shell", "console")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->$")
FAILED_JOB_STATES = ("failed", "dead_letter", "cancelled")
PLACEHOLDER = re.compile(r"<[A-Za-z][\w ]*>")  # <job_id>, <admin key>: for the reader to fill in
RUN_DEADLINE = 900.0  # generous: long polls of up to 30 s each, on a busy two-core machine


@dataclass(frozen=True)
class ShellBlock:
    line: int  # the README line of the opening fence
    script: str
    not_run: str | None  # the reason the README gives for not running it


def shell_blocks(text: str) -> list[ShellBlock]:
    """The README's shell blocks with the `not run` reason of each, if it has one."""
    blocks: list[ShellBlock] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```") or fence == "```":
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        lang = fence[3:].strip().lower()
        if lang in SHELL_FENCES:
            body = lines[i + 1:end]
            if lang == "console":  # commands are the prompted lines; the rest is their output
                body = [ln[2:] for ln in body if ln.startswith("$ ")]
            marker = NOT_RUN.match(lines[i - 1].strip()) if i > 0 else None
            blocks.append(ShellBlock(i + 1, "\n".join(body), marker["reason"] if marker else None))
        i = end + 1
    return blocks


def json_values(output: str) -> Iterator[object]:
    """Every JSON object or array printed in `output` (curl prints them back to back, between other text)."""
    decoder = json.JSONDecoder()
    i = 0
    while i < len(output):
        if output[i] in "{[":
            try:
                value, i = decoder.raw_decode(output, i)
            except ValueError:
                i += 1
                continue
            yield value
        else:
            i += 1


def failure_in(value: object) -> str | None:
    """Why a printed JSON value shows something went wrong: an error envelope, or a failed job."""
    if not isinstance(value, dict):
        return None
    error = value.get("error")
    if isinstance(error, dict) and "code" in error:
        return f"error envelope {error['code']}: {error.get('message')}"
    if "function" in value and value.get("status") in FAILED_JOB_STATES:
        return f"job {value.get('job_id')} {value['status']}: {value.get('error')}"
    return None


def session_script(blocks: list[ShellBlock]) -> str:
    """One shell session running the blocks in order, each announced by a line naming it."""
    parts = []
    for block in blocks:
        mark = f"@@readme-block {block.line}@@"
        parts.append(f"printf '\\n%s\\n' '{mark}'; printf '\\n%s\\n' '{mark}' >&2\n{block.script}\n")
    return "\n".join(parts)


def by_block(output: str) -> dict[int, str]:
    """The session's output split at the block marks: README line -> what that block printed."""
    pieces = re.split(r"^@@readme-block (\d+)@@$", output, flags=re.M)
    return {int(pieces[k]): pieces[k + 1] for k in range(1, len(pieces), 2)}


def test_readme_has_runnable_blocks_and_says_why_others_are_not() -> None:
    blocks = shell_blocks(README.read_text())
    runnable = [b for b in blocks if b.not_run is None]
    assert len(runnable) >= 4, "the README's API examples are shell blocks that run"
    for block in blocks:
        assert block.not_run or not PLACEHOLDER.search(block.script), (
            f"README line {block.line}: a runnable block may not hold placeholders like <job_id>")


def test_every_readme_shell_block_runs_against_ticker_dev(ticker_dev: RunningDev) -> None:
    blocks = shell_blocks(README.read_text())
    runnable = [b for b in blocks if b.not_run is None]
    for block in blocks:
        if block.not_run:
            print(f"README line {block.line}: not run ({block.not_run})")
    print(f"{len(runnable)} README shell blocks run, {len(blocks) - len(runnable)} not run")
    # as a user with the project's virtualenv active: `ticker` on PATH, in the dev's folder
    env = {**ticker_dev.env, "PATH": f"{Path(TICKER).parent}{os.pathsep}{ticker_dev.env.get('PATH', '')}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", session_script(runnable)], cwd=ticker_dev.home,
                          env=env, capture_output=True, text=True, timeout=RUN_DEADLINE)
    printed, errors = by_block(done.stdout), by_block(done.stderr)
    ran = list(printed)
    assert done.returncode == 0, (
        f"README block at line {ran[-1] if ran else '?'} failed (exit {done.returncode}):\n"
        f"{errors.get(ran[-1], done.stderr)[-3000:] if ran else done.stderr[-3000:]}\n"
        f"printed: {printed.get(ran[-1], '')[-2000:] if ran else ''}\ndev log:\n{ticker_dev.log_tail()}")
    assert ran == [b.line for b in runnable], "every runnable block ran, in order"
    for line, output in printed.items():
        values = list(json_values(output))
        problems = [p for p in map(failure_in, values) if p]
        assert not problems, f"README block at line {line}: {problems}\n{output[-3000:]}"
    assert sum(1 for out in printed.values() for _ in json_values(out)) > 20, "the examples printed their answers"


def test_dev_env_without_a_running_dev_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HOME"} | {"HOME": str(tmp_path)}
    done = subprocess.run([TICKER, "dev", "--env"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert "no running `ticker dev` here" in done.stderr and len(done.stderr.strip().splitlines()) == 1
