"""Typed errors of the training side.

A CaseError is bad input (unknown case, bad config key, missing data, ...):
run.py prints its message on one line to stderr and exits with status 2, no
traceback. Anything else that escapes is a crash: recorded, then re-raised.
"""

from __future__ import annotations


class CaseError(Exception):
    """Bad input. Exit status 2, one message, no traceback."""

    exit_code = 2


class ConfigError(CaseError):
    """A config file or --fix-hp entry is wrong."""


class DataError(CaseError):
    """The data directory is missing or does not have the expected layout."""


class DeviceError(CaseError):
    """The vendor's device or precision is not usable in this process."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite: the run failed (kind `job`), not bad input.
    run.py records the message as the rank's error and exits 1 without a traceback
    (the step and the value say all there is)."""

    exit_code = 1
