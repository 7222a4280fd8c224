"""Errors a user can fix by changing a command or putting a file in place.

`src/train.py` prints these as one clear message instead of a traceback.
"""


class TransferlabError(Exception):
    """Bad input: an unknown name, a missing file, conflicting options."""


class PretrainedWeightsUnavailable(TransferlabError):
    """Pretrained weights are neither cached nor downloadable."""
