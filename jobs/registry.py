"""Every arq job function the worker runs, by module. Each job module exposes `FUNCTIONS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Add a job module here when it lands; imports stay explicit so a broken module fails loudly.
JOB_MODULES: tuple[str, ...] = (
    "ticker.jobs.rebalance",
    "ticker.jobs.maintenance",
    "ticker.jobs.instruments",
    "ticker.jobs.tokens",
    "ticker.jobs.history",
    "ticker.jobs.orders",
    "ticker.jobs.gtt",
    "ticker.jobs.margins",
    "ticker.jobs.portfolio",
    "ticker.jobs.sync",
)


def all_functions() -> list[Callable[..., Any]]:
    import importlib

    functions: list[Callable[..., Any]] = []
    for name in JOB_MODULES:
        functions.extend(importlib.import_module(name).FUNCTIONS)
    return functions
