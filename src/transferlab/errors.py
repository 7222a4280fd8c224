"""Errors a user can fix by changing a command or putting a file in place.

`src/train.py` prints these as one clear message instead of a traceback.
"""

import sys
from collections.abc import Callable


class TransferlabError(Exception):
    """Bad input: an unknown name, a missing file, conflicting options."""


class PretrainedWeightsUnavailable(TransferlabError):
    """Pretrained weights are neither cached nor downloadable."""


class PretrainedWeightsDamaged(PretrainedWeightsUnavailable):
    """A pretrained weights file is where it belongs but cannot be read (cut short, or another kind of file)."""


def run_script(main: Callable[[list[str]], int]) -> None:
    """Run a script's `main(arguments)`: its exit status, or one `error: …` line and status 1."""
    try:
        sys.exit(main(sys.argv[1:]))
    except TransferlabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
