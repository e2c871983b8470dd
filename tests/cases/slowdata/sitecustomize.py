"""Slow data for the watchdog tests, injected into real ``python -m cases.run``
processes (their command line stays that of a training process).

A test puts this folder on PYTHONPATH and sets BENCH_TEST_SLOW to JSON such as
``{"first_batch": 1.5, "eval": 1.0, "ranks": [1]}``: then, on those ranks (all
when "ranks" is absent), every pass over the training loader waits that long
for its first batch and every pass over the validation loader that long before
it starts. Without BENCH_TEST_SLOW nothing is patched.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

SLOW = json.loads(os.environ.get("BENCH_TEST_SLOW") or "null")


class SlowStart:
    """A loader whose every iteration begins with a sleep."""

    def __init__(self, loader: Any, seconds: float) -> None:
        self.loader = loader
        self.seconds = seconds

    def __iter__(self) -> Iterator[Any]:
        time.sleep(self.seconds)
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def _install(slow: dict) -> None:
    # Before cases/run.py runs `from cases.data import build_data`, it finds this one.
    import cases.data

    original = cases.data.build_data
    ranks = slow.get("ranks")

    def build_data(*args: object, **kwargs: object) -> object:
        data = original(*args, **kwargs)
        if ranks is not None and int(os.environ.get("RANK", "0")) not in ranks:
            return data
        if slow.get("first_batch"):
            data.train = SlowStart(data.train, float(slow["first_batch"]))
        if slow.get("eval") and data.val is not None:
            data.val = SlowStart(data.val, float(slow["eval"]))
        return data

    cases.data.build_data = build_data


if SLOW:
    _install(SLOW)
