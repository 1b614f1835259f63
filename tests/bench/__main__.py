"""`python -m tests.bench [name ...]`: run bench_*.py modules in this folder and print one table."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pathlib
import sys

from tests.bench.harness import Report, fmt_time, machine_speed


def main(argv: list[str]) -> int:
    here = pathlib.Path(__file__).parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    wanted = [n for n in names if not argv or any(a in n for a in argv)]
    report = Report()
    speeds = [machine_speed()]
    for name in wanted:
        print(f"== {name} (machine speed {fmt_time(speeds[-1])})", flush=True)
        module = importlib.import_module(f"tests.bench.{name}")
        result = module.run(report)
        if inspect.iscoroutine(result):
            asyncio.run(result)
        speeds.append(machine_speed())
    report.row("machine speed: a fixed pure-Python loop before each bench and at the end (lower is faster)",
               " / ".join(fmt_time(s) for s in speeds))
    table = report.markdown()
    print("\n" + table)
    out = pathlib.Path(".ticker")
    out.mkdir(exist_ok=True)
    (out / "bench.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
