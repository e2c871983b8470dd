"""An input-bound rank named from a real run: one process trains on large JPEGs
decoded on the main thread (num_workers 0) into tiny images, so waiting for the
next batch takes most of each step; the harness's attribution reads its event log."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from casekit import make_jpeg_dataset, read_events, run_case_args

from harness.core.attribution import NodeFacts, attribute
from harness.core.events import read_event_files


def test_slow_loading_is_reported_as_input_bound(standalone: Callable[..., object], tmp_path: Path) -> None:
    data = make_jpeg_dataset(tmp_path / "big", per_class_train=6, per_class_val=1, size=1024)
    logs = tmp_path / "logs"
    fix_hp = "bs=4,image_size=16,num_classes=4,num_workers=0,eval=false"
    done = standalone(*run_case_args("mobilenetv2", logs, fix_hp, data=data, config="cpux1x1")[2:])
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [s["value"] for s in read_events(logs / "events_rank0.log").all("step")]
    assert len(steps) == 6 and all(s["data_s"] > 0 for s in steps)

    result = attribute(read_event_files(logs), 1, 1, NodeFacts(hosts={0: "here"}), lambda timing, window: "")
    [bound] = result.input_bound
    assert (bound.rank, bound.host, bound.num_workers, bound.batch_size) == (0, "here", 0, 4)
    assert bound.data_share > 0.2 and bound.data_s_p50 < bound.step_s_p50
    assert result.stragglers == []  # one rank: nobody to be slower than
    [verdict] = result.verdicts
    assert verdict.verdict == "input-bound" and "workers 0, batch 4" in verdict.detail
