"""Worker configuration: queue routing, options, arq settings per queue."""

from __future__ import annotations

import pytest

from ticker.core.contracts import JOB_CANCEL_ORDER, JOB_PLACE_ORDER, JOB_SYNC_ORDERS
from ticker.jobs.worker import IN_PROGRESS_MARGIN_S, functions_for, make_worker, parse_args


def test_order_jobs_route_to_the_orders_queue_and_the_rest_to_default(names) -> None:
    orders = {f.name for f in functions_for("orders", names)}
    default = {f.name for f in functions_for("default", names)}
    assert {JOB_PLACE_ORDER, JOB_CANCEL_ORDER} <= orders and JOB_SYNC_ORDERS in default
    assert not orders & default


def test_orders_worker_polls_fast_and_frees_a_dead_workers_jobs_soon(settings) -> None:
    worker = make_worker("orders", settings, None, concurrency=7)
    assert worker.poll_delay_s == settings.orders_poll_delay <= 0.01
    assert worker.max_jobs == 7 and worker.health_check_interval == settings.worker_health_check_seconds
    assert worker.in_progress_timeout_s == settings.order_job_timeout_seconds + IN_PROGRESS_MARGIN_S
    default = make_worker("default", settings, None)
    assert default.poll_delay_s == settings.default_poll_delay and default.max_jobs == settings.worker_concurrency


@pytest.mark.parametrize("argv", [["--queue", "nope"], ["--concurrency", "0"], ["--concurrency", "x"]])
def test_bad_options_are_clear_cli_errors(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and "ticker worker" in capsys.readouterr().err


def test_defaults() -> None:
    args = parse_args([])
    assert (args.queue, args.concurrency, args.burst) == ("all", None, False)
