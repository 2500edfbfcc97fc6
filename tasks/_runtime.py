"""Per-process state of a worker: settings, database sessions, sources. Built once."""

from __future__ import annotations

import functools
import threading
from typing import Any

from pacsflow.config import load_settings
from pacsflow.db.session import make_engine, make_sessionmaker
from pacsflow.errors import TransientError
from pacsflow.pathways.sources import StudySource
from pacsflow.writeback.ledger import Ledger
from pacsflow.writeback.writers import PathwayEnv

_env_lock = threading.Lock()


@functools.cache
def _build_env() -> PathwayEnv:
    settings = load_settings()
    sessions = make_sessionmaker(make_engine(settings.database_url))
    return PathwayEnv(settings, sessions, StudySource(settings, sessions), Ledger(sessions))


def env() -> PathwayEnv:
    """The worker's environment, built once (thread-safe: the warm-up and runs share it)."""
    with _env_lock:
        return _build_env()


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: retry what may succeed later (peer down), never bad input."""
    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as raised:  # the stored result may itself be unavailable
            exc = raised
    return isinstance(exc, TransientError)


# Back-off for writebacks: a RIS or archive that is down for a few minutes still gets it.
WRITEBACK_RETRY_DELAYS = [2, 5, 10, 20, 30, 60, 60, 60]
# Back-off for reads from the archive (headers, pixel data, priors): an archive restart
# (tens of seconds) is waited out; 17-37 s of retries made a 30 s outage fail runs.
ARCHIVE_RETRY_DELAYS = [2, 5, 10, 20, 30, 60]
