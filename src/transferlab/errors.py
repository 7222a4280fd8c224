"""Errors a user can fix by changing a command or putting a file in place.

Every entry point prints these as one clear line instead of a traceback.
"""

import difflib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterable
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
            logging.getLogger("transferlab").error("error: %s", error)
            sys.exit(1)

    return run


def run_app(main: Callable[[], object], on_refusal: Callable[[], None] | None = None) -> None:
    """Run a Hydra app's `main()` so that Hydra's own refusal of a command line (a mistyped key, an unknown
    group option) is one line on stderr and status 1, as a TransferlabError is (`one_line_errors`). Call
    it from an entry point's `__main__` block: it sets HYDRA_FULL_ERROR, so that Hydra raises instead of
    printing its own report. `on_refusal` tidies what Hydra made before it refused (a sweep directory)."""
    from hydra.errors import HydraException

    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except HydraException as error:
        if on_refusal is not None:
            on_refusal()
        # "error: ", as a run's own errors read on its console (console.ConsoleFormatter).
        logging.getLogger("transferlab").error("error: %s", hydra_refusal(error))
        sys.exit(1)


def did_you_mean(word: str, candidates: Iterable[str], prefix: str = "") -> str:
    """` (did you mean optimizer.lr?)` for the nearest candidates, or nothing when none is near."""
    near = difflib.get_close_matches(word, list(candidates), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(prefix + n for n in near)}?)" if near else ""


def hydra_refusal(error: Exception) -> str:
    """Hydra's refusal of a command line as one line a user can act on.

    Hydra answers a mistyped key with "Could not override 'optimizer.lrr'. To append to your config use
    +optimizer.lrr=0.1": advice that leads astray when the key exists under another spelling. Its error
    carries the section it looked in (OmegaConf's `parent_node`), so this names the nearest keys of that
    section instead; a mistyped group option gets the nearest options the same way."""
    from hydra.errors import MissingConfigException
    from omegaconf import DictConfig

    text = " ".join(str(error).split("Config search path")[0].split())  # the search path is Hydra's business
    cause = error.__cause__
    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        if group:
            return (
                f"{group}={option}: no such option{did_you_mean(option, error.options, f'{group}=')}; "
                f"{group} is one of {', '.join(error.options)}"
            )
    key = getattr(cause, "full_key", None)
    section = getattr(cause, "parent_node", None)
    if text.startswith("Could not override") and key and isinstance(section, DictConfig):
        parent, _, leaf = str(key).rpartition(".")
        keys = [str(k) for k in section if not str(k).startswith("_") and str(k) != "hydra"]
        where = f"{parent} has" if parent else "the config has"
        shown = ", ".join(f"{parent}.{k}" if parent else k for k in keys)
        return f"{key}: no such key{did_you_mean(leaf, keys, f'{parent}.' if parent else '')}; {where} {shown}"
    return text


def require_keys(cfg: Any, script: str) -> None:
    """The keys an app's config leaves `???` must be given on the command line."""
    from omegaconf import OmegaConf

    if missing := sorted(OmegaConf.missing_keys(cfg)):
        raise TransferlabError(f"missing {', '.join(f'{k}=' for k in missing)} (python {script} --help)")
