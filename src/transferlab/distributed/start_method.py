"""Jobs of Hydra's joblib launcher start their processes as a plain run does.

joblib runs each job in a loky worker, and multiprocessing's bootstrap of that worker
(`BaseProcess._bootstrap` → `context._force_start_method`) makes "loky" the worker's
default start method. Only loky's own `LokyProcess` can start through it: torch's
DataLoader starts plain `multiprocessing.Process` workers, which loky's Popen rejects
("'Process' object has no attribute 'env'"), and a DataLoader given a spawn or
forkserver context fails as well, because its children are told to switch to "loky",
a method they do not know ("cannot find context for 'loky'").
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def restore_platform_start_method() -> str | None:
    """Give this process back the platform's default start method (fork on Linux before
    Python 3.14) when a launcher left it one the standard library does not know; returns
    the method replaced, else None. Processes started afterwards (DataLoader workers,
    decoding and feature-cache loaders) start as in a run without the launcher."""
    current = multiprocessing.get_start_method(allow_none=True)
    if current is None or current in multiprocessing.get_all_start_methods():
        return None
    multiprocessing.set_start_method(None, force=True)  # None: the platform's default again
    return current


class PlatformStartMethod(Callback):
    """Hydra callback, run in each job's own process before the job starts."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        replaced = restore_platform_start_method()
        if replaced is not None:
            log.info(
                "this job starts its processes (DataLoader workers) with the %s start method, not the launcher's %s",
                multiprocessing.get_start_method(),
                replaced,
            )
