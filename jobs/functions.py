"""Every arq job function the worker runs, by module. Each job module exposes `FUNCTIONS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Add a job module here when it lands; imports stay explicit so a broken module fails loudly.
JOB_MODULES: tuple[str, ...] = (
    "ticker.jobs.data.rebalance",
    "ticker.jobs.upkeep.maintenance",
    "ticker.jobs.data.instrument_refresh",
    "ticker.jobs.upkeep.access_tokens",
    "ticker.jobs.data.history_fetch",
    "ticker.jobs.orders.order_jobs",
    "ticker.jobs.orders.gtt_jobs",
    "ticker.jobs.orders.mf_jobs",
    "ticker.jobs.orders.margin_preview",
    "ticker.jobs.data.portfolio_reads",
    "ticker.jobs.data.portfolio_refresh",
    "ticker.jobs.orders.order_sync",
)


def all_functions() -> list[Callable[..., Any]]:
    import importlib

    functions: list[Callable[..., Any]] = []
    for name in JOB_MODULES:
        functions.extend(importlib.import_module(name).FUNCTIONS)
    return functions
