"""The loop of the periodic workers that app/workers.py runs (lease reaper, SLA watch, auto-close, queue counts,
retention): a pass every interval; a pass that fails is logged and the next one comes as usual, so a database that
is away for a while costs warnings, not the worker."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app.db.errors import StoreUnavailable, translated


async def attempt(what: str, run_pass: Callable[[], Awaitable[object]], log: logging.Logger) -> bool:
    """Run one pass; whether it finished. A database that is unavailable is a warning; anything else is logged
    with its traceback."""
    try:
        async with translated():
            await run_pass()
        return True
    except asyncio.CancelledError:
        raise
    except StoreUnavailable as exc:
        log.warning("%s failed (%s: %s); retrying", what, type(exc).__name__, exc)
    except Exception:
        log.exception("%s failed; retrying", what)
    return False


async def every(interval: float, run_pass: Callable[[], Awaitable[object]], *, what: str, log: logging.Logger,
                retry_within: float | None = None) -> None:
    """Run a pass every `interval` seconds until cancelled; after a failed pass, wait at most `retry_within`."""
    while True:
        finished = await attempt(what, run_pass, log)
        pause = interval if finished or retry_within is None else min(interval, retry_within)
        await asyncio.sleep(pause)
