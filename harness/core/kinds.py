"""The closed vocabularies of a run's outcome, with no imports (the CLI's parser uses them)."""

from __future__ import annotations

from typing import Literal

# Why a run failed, as campaigns decide retries (only `infra`, and `stalled`
# where configured, are retried). bad_input never gets this far: exit 2.
FailureKind = Literal["bad_input", "infra", "job", "stalled", "timeout", "interrupted"]
# A recorded run either succeeded or failed (failure and failure_kind say why).
RunStatus = Literal["success", "failed"]
