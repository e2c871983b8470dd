"""Is the figure right for the hardware: a finished run's MFU and % of expected.

    mfu = flops_per_sample x p_core / (peak x devices)

- flops_per_sample: the ``flops`` event the training processes write (cases/flops.py),
  the lowest rank's that has one.
- peak: the dense TFLOPS per device at the run's precision (PEAK_KEY_OF_PRECISION:
  amp is judged against the fp16 peak), from the inventory's ``cluster.peak_tflops``
  (the site's own figure) or else ``reference/<accelerator>.yaml``. No figure: mfu is
  None with the reason. There is no default peak, ever.
- % of expected: p_core over the reference's figure for the same case, precision,
  config, batch size per device and image size; for a bandwidth case (the all-reduce
  case) peak busbw over the fabric's figure: the node's links for one node, the
  per-HCA figure x HCAs (capped by the node's links) across nodes.

A reference file that cannot be read does not stop the run from being recorded:
its error becomes the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.events import Event, last
from harness.core.inventory import Inventory
from harness.core.results import Efficiency, RunResult
from harness.errors import UserError
from harness.expect.reference import (
    PEAK_KEY_OF_PRECISION,
    AcceleratorReference,
    PeakKey,
    load_reference,
    reference_file,
)

INVENTORY_PEAK_SOURCE = "the inventory's cluster.peak_tflops (the site's figure)"


@dataclass(frozen=True)
class _Reference:
    """The accelerator's reference file, or why there is none to use."""

    data: AcceleratorReference | None
    missing: str  # why data is None, or why it must not be used for this run ("" when usable)
    file: str


def _flops(by_rank: dict[int, list[Event]]) -> tuple[float | None, str]:
    for rank in sorted(by_rank):
        event = last(by_rank[rank], "flops")
        if event is None:
            continue
        value = event.value.get("flops_per_sample")
        if isinstance(value, (int, float)) and value > 0:
            return float(value), ""
        return None, str(event.value.get("missing") or "the flops event holds no count")
    return None, "no flops event in the event logs (training processes older than this harness)"


def _device_name(by_rank: dict[int, list[Event]]) -> str:
    for rank in sorted(by_rank):
        world = last(by_rank[rank], "world")
        if world is not None and world.value.get("device_name"):
            return str(world.value["device_name"])
    return ""


def _reference(accelerator: str, device_name: str) -> _Reference:
    file = f"reference/{reference_file(accelerator).name}"
    try:
        data = load_reference(accelerator)
    except UserError as exc:
        return _Reference(None, f"the reference file cannot be used: {exc}", file)
    if data is None:
        return _Reference(None, f"no reference data for accelerator {accelerator} ({file} does not exist)", file)
    if device_name and not data.runs_on(device_name):
        return _Reference(data, f"the ranks ran on {device_name!r}, which is not {accelerator} by {file} "
                                f"(device_names {', '.join(data.device_names)}): run with --accelerator naming "
                                "the device", file)
    return _Reference(data, "", file)


def _peak(key: PeakKey | None, precision: str, inventory: Inventory, ref: _Reference) -> tuple[float | None, str, str]:
    """(TFLOPS, source, why None)."""
    if key is None:
        return None, "", f"precision {precision!r} has no peak to divide by (known: {', '.join(PEAK_KEY_OF_PRECISION)})"
    if key in inventory.cluster.peak_tflops:
        return inventory.cluster.peak_tflops[key], INVENTORY_PEAK_SOURCE, ""
    if ref.data is None or ref.missing:
        return None, "", f"{ref.missing}, and the inventory's cluster.peak_tflops has no {key}"
    if key not in ref.data.peak_tflops:
        return None, "", (f"{ref.file} has no dense {key} peak and the inventory's cluster.peak_tflops none either")
    return ref.data.peak_tflops[key], f"{ref.data.peak_source} ({ref.file})", ""


def _mfu(result: RunResult, by_rank: dict[int, list[Event]], inventory: Inventory, ref: _Reference,
         efficiency: Efficiency) -> Efficiency:
    if result.bandwidth is not None:
        return efficiency.model_copy(update={"mfu_missing": "not a training case: it measures a collective"})
    flops, flops_missing = _flops(by_rank)
    key = PEAK_KEY_OF_PRECISION.get(result.precision)
    peak, source, peak_missing = _peak(key, result.precision, inventory, ref)
    p_core = result.metrics.p_core if result.metrics is not None else None
    devices = result.metrics.world_size if result.metrics is not None and result.metrics.world_size else (
        result.nnodes * result.nproc_per_node)
    update: dict[str, object] = {"flops_per_sample": flops, "peak_tflops": peak, "peak_source": source,
                                 "peak_key": key or ""}
    if flops is None:
        update["mfu_missing"] = f"no FLOPs per sample: {flops_missing}"
    elif peak is None:
        update["mfu_missing"] = f"no dense peak: {peak_missing}"
    elif p_core is None:
        update["mfu_missing"] = "no p_core: the run trained no timed step"
    else:
        update["mfu"] = flops * p_core / (peak * 1e12 * devices)
        update["devices"] = devices
    return efficiency.model_copy(update=update)


def _expected_throughput(result: RunResult, ref: _Reference) -> tuple[float | None, str, str]:
    """(expected p_core, source, why None) for a training run."""
    if ref.data is None or ref.missing:
        return None, "", ref.missing
    batch = result.effective_config.get("batch_size")
    image = result.effective_config.get("image_size")
    for entry in ref.data.expected:
        if (entry.case, entry.precision, entry.config) == (result.case, result.precision, result.config_name) \
                and entry.batch_size == batch and entry.image_size == image:
            note = f"; {entry.note}" if entry.note else ""
            return entry.p_core, f"{entry.source} ({ref.file}{note})", ""
    return None, "", (f"{ref.file} has no expected p_core for {result.case} {result.precision} {result.config_name} "
                      f"at batch {batch} per device, image {image}")


def _expected_busbw(result: RunResult, inventory: Inventory, ref: _Reference) -> tuple[float | None, str, str]:
    """(expected peak busbw GB/s, source, why None) for a bandwidth case."""
    if ref.data is None or ref.missing:
        return None, "", ref.missing
    intra = next((e for e in ref.data.busbw_intra_node if e.nproc == result.nproc_per_node), None)
    if result.nnodes == 1:
        if intra is None:
            return None, "", f"{ref.file} has no all-reduce busbw for {result.nproc_per_node} devices in one node"
        return intra.busbw_gbps, f"{intra.link}: {intra.source} ({ref.file})", ""
    fabric = inventory.cluster.fabric
    if fabric.type != "ib" or fabric.link_gbps is None:
        return None, "", (f"across nodes the figure is per HCA: the inventory's cluster.fabric is type {fabric.type}"
                          + ("" if fabric.type != "ib" else " without link_gbps (the HCAs' line rate)"))
    per_hca = next((e for e in ref.data.busbw_per_hca if e.link_gbps == fabric.link_gbps), None)
    if per_hca is None:
        return None, "", f"{ref.file} has no all-reduce busbw per {fabric.link_gbps} Gb/s HCA"
    expected = per_hca.busbw_gbps * len(fabric.hcas)
    source = f"{len(fabric.hcas)} x {per_hca.busbw_gbps:g} GB/s per {fabric.link_gbps} Gb/s HCA: {per_hca.source}"
    if intra is not None and intra.busbw_gbps < expected:
        expected, source = intra.busbw_gbps, f"capped by the node's {intra.link}: {intra.source}"
    return expected, f"{source} ({ref.file})", ""


def judge(result: RunResult, by_rank: dict[int, list[Event]], inventory: Inventory) -> Efficiency:
    """The run's efficiency block (results.json `efficiency`)."""
    ref = _reference(result.accelerator, _device_name(by_rank))
    efficiency = _mfu(result, by_rank, inventory, ref, Efficiency(precision=result.precision))
    if result.bandwidth is not None:
        measured = result.bandwidth.peak_busbw_gbps
        expected, source, missing = _expected_busbw(result, inventory, ref)
        metric = "peak_busbw_gbps"
    else:
        measured = result.metrics.p_core if result.metrics is not None else None
        expected, source, missing = _expected_throughput(result, ref)
        metric = "p_core"
    update: dict[str, object] = {"expected_metric": metric, "expected": expected, "expected_source": source}
    if expected is None:
        update["expected_missing"] = missing
    elif measured is None:
        update["expected_missing"] = f"no {metric}: nothing was measured"
    else:
        update["of_expected"] = measured / expected
    return efficiency.model_copy(update=update)


def with_efficiency(result: RunResult, by_rank: dict[int, list[Event]], inventory: Inventory) -> RunResult:
    """The result with its efficiency block (the runner's one call)."""
    return result.model_copy(update={"efficiency": judge(result, by_rank, inventory)})
