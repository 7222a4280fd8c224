"""Errors a user can fix by changing a command or putting a file in place.

Every entry point prints these as one clear line instead of a traceback.
"""

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class TransferlabError(Exception):
    """Bad input: an unknown name, a missing file, conflicting options."""


class PretrainedWeightsUnavailable(TransferlabError):
    """Pretrained weights are neither cached nor downloadable."""


class PretrainedWeightsDamaged(PretrainedWeightsUnavailable):
    """A pretrained weights file is where it belongs but cannot be read (cut short, or another kind of file)."""


def one_line_errors(task: Callable[[Any], T]) -> Callable[[Any], T]:
    """A Hydra task function whose TransferlabError is one line on stderr and status 1, not a traceback
    (decorate it below `@hydra.main`)."""

    @functools.wraps(task)
    def run(cfg: Any) -> T:
        try:
            return task(cfg)
        except TransferlabError as error:
            logging.getLogger("transferlab").error("%s", error)
            sys.exit(1)

    return run


def run_app(main: Callable[[], object]) -> None:
    """Run a Hydra app's `main()` so that Hydra's own refusal of a command line (a mistyped key, an unknown
    group option) is one line on stderr and status 1, as a TransferlabError is (`one_line_errors`). Call
    it from an entry point's `__main__` block: it sets HYDRA_FULL_ERROR, so that Hydra raises instead of
    printing its own report."""
    from hydra.errors import HydraException

    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except HydraException as error:
        message = " ".join(str(error).split("Config search path")[0].split())  # the search path is Hydra's business
        logging.getLogger("transferlab").error("%s", message)
        sys.exit(1)


def require_keys(cfg: Any, script: str) -> None:
    """The keys an app's config leaves `???` must be given on the command line."""
    from omegaconf import OmegaConf

    if missing := sorted(OmegaConf.missing_keys(cfg)):
        raise TransferlabError(f"missing {', '.join(f'{k}=' for k in missing)} (python {script} --help)")
