"""What the test inventories give every rank on the test hosts.

One OpenMP thread per rank: torch's default of one per core makes the ranks of
a 2-core machine fight over its cores (a resnet50 step took 6-7 s instead of
0.6-0.8 s with other load beside it); torchrun sets the same when it starts
several ranks on a node. Imported by conftest and by the tests that write their
own inventories (a test module cannot import conftest itself: tests/cases has one too).
"""

from __future__ import annotations

RANK_ENV = {"OMP_NUM_THREADS": "1"}
