"""A library that logs a traceback on every retry while a server is down gets one line a minute."""

from __future__ import annotations

import io
import logging

from ticker.infra.runtime.logs import setup_logging


def test_asyncpg_pool_retries_log_one_line_without_traceback() -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", stream=out)
    pool_log = logging.getLogger("asyncpg.pool")
    for _ in range(50):
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError:
            pool_log.warning("Failed to restore the pool connection floor; retrying", exc_info=True)
    lines = out.getvalue().splitlines()
    assert lines == [lines[0]] and "Traceback" not in out.getvalue()
    assert "retrying (ConnectionRefusedError)" in lines[0]
    logging.getLogger("ticker.other").warning("unrelated")
    assert "unrelated" in out.getvalue()
