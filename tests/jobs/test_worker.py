"""Worker configuration: queue routing, options, arq settings per queue."""

from __future__ import annotations

import pytest
from arq.worker import func

from ticker.core.contracts import JOB_CANCEL_ORDER, JOB_PLACE_ORDER, JOB_SYNC_ORDERS, ORDER_JOBS
from ticker.jobs.functions import all_functions
from ticker.jobs.worker import IN_PROGRESS_MARGIN_S, functions_for, make_worker, parse_args


def test_order_jobs_route_to_the_orders_queue_and_the_rest_to_default(names) -> None:
    orders = {f.name for f in functions_for("orders", names)}
    default = {f.name for f in functions_for("default", names)}
    assert orders == ORDER_JOBS and {JOB_PLACE_ORDER, JOB_CANCEL_ORDER} <= orders and JOB_SYNC_ORDERS in default
    assert not orders & default and orders | default == {func(f).name for f in all_functions()}


def test_orders_worker_polls_fast_with_the_concurrency_and_health_check_asked_for(settings) -> None:
    worker = make_worker("orders", settings, None, concurrency=7)
    assert worker.poll_delay_s == settings.orders_poll_delay <= 0.01
    assert worker.max_jobs == 7 and worker.health_check_interval == settings.worker_health_check_seconds
    default = make_worker("default", settings, None)
    assert default.poll_delay_s == settings.default_poll_delay and default.max_jobs == settings.worker_concurrency


def test_in_progress_mark_outlives_the_job_timeout_by_the_margin_only(settings) -> None:
    # How long a dead worker's job stays unavailable to others (arq's default margin is 10 s); that
    # another worker then completes it is shown with real processes in test_worker_processes.
    worker = make_worker("orders", settings, None)
    assert worker.in_progress_timeout_s == settings.order_job_timeout_seconds + IN_PROGRESS_MARGIN_S
    slower = settings.model_copy(update={"order_job_timeout_seconds": 40.0})
    assert make_worker("orders", slower, None).in_progress_timeout_s == 40.0 + IN_PROGRESS_MARGIN_S


@pytest.mark.parametrize("argv", [["--queue", "nope"], ["--concurrency", "0"], ["--concurrency", "x"]])
def test_bad_options_are_clear_cli_errors(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "ticker worker" in err and argv[0] in err  # names the option at fault


def test_defaults() -> None:
    args = parse_args([])
    assert (args.queue, args.concurrency, args.burst) == ("all", None, False)
