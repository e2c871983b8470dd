"""Energy per 1,000 samples and the idle-device warning, from recorded power traces.

The traces are real nvidia-smi output of an 8 x H100 machine (tests/fixtures/smi,
see its README): `nvidia-smi --query-gpu=timestamp,power.draw,utilization.gpu,
memory.used --format=csv -lms 100`, one line per GPU per poll, GPUs in index
order. A fake `nvidia-smi` first on PATH answers each call with the header and
the next poll's 8 lines, the real sampler (harness/devices/sampler.py) writes
them into a monitor.csv under a clock that gives each round the poll's recorded
time, and the figures are checked against a trapezoid computed here from the
fixture's own lines.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from pathlib import Path

import pytest
import yaml
from fake_backend import FakeBackend, FakeNode
from rich.console import Console

from harness.backends.monitors import MONITOR_INTERVAL_S, SYSTEM_POWER_EVERY
from harness.backends.transport import CommandResult, LocalTransport
from harness.core import watch
from harness.core.device_use import low_device_use
from harness.core.energy import MAX_GAP_S, run_energy
from harness.core.events import Event
from harness.core.inventory import load_inventory
from harness.core.job import make_job
from harness.core.monitor_window import NodeMonitor, TrainingMonitors, training_monitors
from harness.core.plan import RunPlan
from harness.core.results import NodeOutcome
from harness.core.runner import run_job
from harness.core.vendor import load_vendor
from harness.core.watch import WatchLimits
from harness.devices.integrate import integrate_power
from harness.devices.readings import DeviceSample
from harness.devices.sampler import MonitorRow, MonitorSampler
from harness.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures" / "smi"
TRAINING = "nvidia-smi_csv_power_trace_8xh100_training.txt"  # 16 polls under load, 84-98 %
IDLE = "nvidia-smi_csv_power_trace_8xh100_idle.txt"  # 10 polls before the load, 0 %
GPUS = 8
SAMPLES = 4096  # globally trained samples of the made-up run the trace is read for
IPMI = "ipmitool_dcmi_power_activated.txt"  # "Instantaneous power reading: 215 Watts"

FAKE_NVIDIA_SMI = """#!/bin/sh
# A recorded trace, one poll per call: its header, then the next {gpus} lines.
n=$(cat '{state}' 2>/dev/null || echo 0)
echo $((n + 1)) > '{state}'
head -n 1 '{trace}'
tail -n +2 '{trace}' | sed -n "$((n * {gpus} + 1)),$((n * {gpus} + {gpus}))p"
"""
FAKE_IPMITOOL = "#!/bin/sh\ncat '{reading}'\n"

Poll = tuple[int, list[tuple[float, float]]]  # epoch ms of the poll, (W, util %) per GPU


def recorded_polls(name: str) -> list[Poll]:
    """The fixture read by hand: each poll's time (its first line's) and every GPU's watts and utilisation."""
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()[1:]
    polls: list[Poll] = []
    for first in range(0, len(lines), GPUS):
        cells = [line.split(", ") for line in lines[first:first + GPUS]]
        stamp = dt.datetime.strptime(cells[0][0], "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=dt.timezone.utc)
        readings = [(float(c[1].removesuffix(" W")), float(c[2].removesuffix(" %"))) for c in cells]
        polls.append((round(stamp.timestamp() * 1000), readings))
    return polls


def trapezoid(points: list[tuple[int, float]]) -> float:
    return sum((w0 + w1) / 2 * (t1 - t0) / 1000 for (t0, w0), (t1, w1) in zip(points, points[1:]))


def device_points(polls: list[Poll], gpu: int) -> list[tuple[int, float]]:
    return [(stamp, readings[gpu][0]) for stamp, readings in polls]


class PathTransport(LocalTransport):
    """This machine, with a folder of fake tools first on PATH."""

    def __init__(self, host: str, bin_dir: Path) -> None:
        super().__init__(host)
        self.bin_dir = bin_dir

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        return super().run(["env", f"PATH={self.bin_dir}{os.pathsep}{os.environ['PATH']}", *argv], timeout, stdin)


def tool(bin_dir: Path, name: str, text: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)


def sample_trace(folder: Path, trace: str, host: str = "gpu1", ipmitool: bool = False) -> list[Poll]:
    """Run the real sampler once per recorded poll into folder/monitor.csv; the polls it served."""
    polls = recorded_polls(trace)
    bin_dir = folder / "bin"
    tool(bin_dir, "nvidia-smi", FAKE_NVIDIA_SMI.format(state=folder / "served", trace=FIXTURES / trace, gpus=GPUS))
    if ipmitool:
        tool(bin_dir, "ipmitool", FAKE_IPMITOOL.format(reading=FIXTURES / IPMI))
    # half a millisecond in, so that the sampler's int(clock() * 1000) is the recorded millisecond
    times = iter([(stamp + 0.5) / 1000 for stamp, _ in polls])
    sampler = MonitorSampler(PathTransport(host, bin_dir), "nvidia-smi", folder / "monitor.csv", host_stats="none",
                             system_power=ipmitool, clock=lambda: next(times))
    for _ in polls:
        sampler.sample_once()
    sampler.stop()
    assert sampler.failures == {}, sampler.last_errors
    return polls


def window(start_ms: int, stop_ms: int) -> dict[int, list[Event]]:
    return {0: [Event(start_ms, "train_start", 0, {}), Event(stop_ms, "train_stop", 0, {})]}


def outcome(folder: Path, host: str = "gpu1") -> NodeOutcome:
    return NodeOutcome(host=host, node_rank=0, container="c", exit_code=0, log_dir=str(folder))


# --------------------------------------------------------------------------- energy


def test_energy_of_a_recorded_nvidia_smi_trace_through_the_real_sampler(tmp_path: Path) -> None:
    polls = sample_trace(tmp_path / "node", TRAINING, ipmitool=True)
    start, stop = polls[0][0], polls[-1][0]
    energy = run_energy(training_monitors([outcome(tmp_path / "node")], window(start, stop), GPUS),
                        load_vendor("nvidia"), SAMPLES)

    assert energy.missing == "" and energy.notes == []
    assert energy.window_s == pytest.approx((stop - start) / 1000)
    assert energy.source == "nvidia-smi, per device; whole-host power (ipmitool) listed apart, not in the total"
    devices = {entry.device: entry for entry in energy.devices}
    assert sorted(devices) == [*map(str, range(GPUS)), "host"]
    for gpu in range(GPUS):
        points = device_points(polls, gpu)
        entry = devices[str(gpu)]
        assert entry.host == "gpu1" and entry.samples == len(polls) == 16
        assert entry.energy_j == pytest.approx(trapezoid(points), rel=1e-9)
        assert entry.max_w == max(watts for _, watts in points)
        assert entry.avg_w == pytest.approx(trapezoid(points) / ((stop - start) / 1000), rel=1e-9)
    # GPU 0's first three polls, by hand: 569.03 W at .589, 569.17 W at .690, 571.48 W at .790
    assert polls[0][1][0][0] == 569.03 and polls[2][0] - polls[0][0] == 201
    first_three = run_energy(training_monitors([outcome(tmp_path / "node")], window(start, polls[2][0]), GPUS),
                             load_vendor("nvidia"), SAMPLES)
    gpu0 = next(entry for entry in first_three.devices if entry.device == "0")
    assert gpu0.energy_j == pytest.approx((569.03 + 569.17) / 2 * 0.101 + (569.17 + 571.48) / 2 * 0.100)
    assert (gpu0.samples, gpu0.max_w) == (3, 571.48)

    # The total is the devices'; the host's 215 W (its BMC, every poll) is listed, not added.
    device_total = sum(trapezoid(device_points(polls, gpu)) for gpu in range(GPUS))
    assert energy.energy_j == pytest.approx(device_total, rel=1e-9)
    assert 6700 < device_total < 6900  # 8 GPUs at ~565 W for 1.5 s
    assert devices["host"].energy_j == pytest.approx(215 * (stop - start) / 1000)
    assert energy.j_per_1k_samples == pytest.approx(device_total / SAMPLES * 1000, rel=1e-9)
    recorded = json.loads(energy.model_dump_json())
    assert recorded["j_per_1k_samples"] == pytest.approx(device_total / SAMPLES * 1000, rel=1e-9)


def test_samples_outside_the_training_window_do_not_count(tmp_path: Path) -> None:
    polls = sample_trace(tmp_path / "node", TRAINING)
    inside = polls[2:10]
    energy = run_energy(training_monitors([outcome(tmp_path / "node")], window(inside[0][0], inside[-1][0]), GPUS),
                        load_vendor("nvidia"), SAMPLES)
    for entry in energy.devices:
        points = device_points(inside, int(entry.device))
        assert entry.samples == 8
        assert entry.energy_j == pytest.approx(trapezoid(points), rel=1e-9)
        assert entry.max_w == max(watts for _, watts in points)
    assert energy.energy_j == pytest.approx(sum(trapezoid(device_points(inside, g)) for g in range(GPUS)), rel=1e-9)

    gpu0 = device_points(polls, 0)
    # A spike outside the window changes nothing.
    spiked = [(gpu0[0][0], 5000.0), *gpu0[1:]]
    assert integrate_power(spiked, inside[0][0], inside[-1][0], 12_000).energy_j == \
        pytest.approx(trapezoid(device_points(inside, 0)), rel=1e-9)
    # A window that opens between two samples: the line between them is cut at the edge.
    (t1, w1), (t2, w2) = gpu0[1], gpu0[2]
    assert (w1, w2, t2 - t1) == (569.17, 571.48, 100)  # at .690 and .790
    middle = (t1 + t2) // 2
    edge = integrate_power(gpu0[:3], middle, t2, 12_000)
    assert edge.energy_j == pytest.approx(((569.17 + 571.48) / 2 + 571.48) / 2 * 0.050)
    assert (edge.samples, edge.covered_s) == (1, pytest.approx(0.050))


def test_a_long_silence_and_an_uncovered_edge_are_left_out_and_said(tmp_path: Path) -> None:
    silence = int(MAX_GAP_S * 1000) + 1000  # 13 s without a sample
    points = [(0, 569.03), (1000, 569.17), (1000 + silence, 571.48), (20_000, 564.56)]
    integral = integrate_power(points, 0, 20_000, int(MAX_GAP_S * 1000))
    assert integral.gaps == 1
    assert integral.energy_j == pytest.approx(trapezoid(points[:2]) + trapezoid(points[2:]))
    assert integral.covered_s == pytest.approx(1 + (20_000 - 14_000) / 1000)

    polls = sample_trace(tmp_path / "node", TRAINING)
    late_stop = polls[-1][0] + 10_000  # the monitor stopped 10 s before training did
    energy = run_energy(training_monitors([outcome(tmp_path / "node")], window(polls[0][0], late_stop), GPUS),
                        load_vendor("nvidia"), SAMPLES)
    assert energy.energy_j == pytest.approx(sum(trapezoid(device_points(polls, g)) for g in range(GPUS)), rel=1e-9)
    assert len(energy.notes) == GPUS
    assert energy.notes[0] == "gpu1 0: samples span 1.5 s of the 11.5 s window; the rest is not counted"


def test_no_power_source_gives_no_energy_and_the_reason(tmp_path: Path) -> None:
    # The cpu vendor has no device tool, and this machine has no BMC: the real sampler writes host rows only.
    node = tmp_path / "node"
    times = iter([1000.0, 2000.0, 3000.0])
    sampler = MonitorSampler(PathTransport("cpuhost", tmp_path / "bin"), None, node / "monitor.csv",
                             host_stats="proc", system_power=True, clock=lambda: next(times))
    for _ in range(3):
        sampler.sample_once()
    sampler.stop()
    monitors = training_monitors([outcome(node, "cpuhost")], window(1_000_000, 3_000_000), devices_used=1)
    energy = run_energy(monitors, load_vendor("cpu"), SAMPLES)
    assert (energy.energy_j, energy.j_per_1k_samples, energy.devices) == (None, None, [])
    assert energy.missing == "no device monitor for vendor cpu and no ipmitool power on the hosts"
    assert energy.window_s == 2000.0
    assert low_device_use(monitors, 0.1) == []  # no utilisation reported: nothing to judge

    # A device tool that reports no power (its [N/A]) says so.
    rows = tuple(MonitorRow(stamp, "gpu1", device=DeviceSample(index=0, util_pct=90.0)) for stamp in (1000, 2000))
    silent = TrainingMonitors((1000, 2000), (NodeMonitor("gpu1", rows, devices_used=1),))
    assert run_energy(silent, load_vendor("nvidia"), SAMPLES).missing == \
        "nvidia-smi reported no power in the training window and no ipmitool power on the hosts"
    # No training window, no monitor file: each its own reason.
    assert "no training window" in run_energy(training_monitors([], {}, 1), load_vendor("nvidia"), SAMPLES).missing
    assert run_energy(training_monitors([outcome(tmp_path / "nowhere")], window(1, 2), 1), load_vendor("nvidia"),
                      SAMPLES).missing == "no monitor.csv came back from any node"


def test_whole_host_power_is_the_energy_only_where_no_device_tool_reports_any(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "ipmitool", FAKE_IPMITOOL.format(reading=FIXTURES / IPMI))
    times = iter([1000.0, 1001.0, 1002.0])
    sampler = MonitorSampler(PathTransport("cpuhost", bin_dir), None, tmp_path / "node" / "monitor.csv",
                             host_stats="none", system_power=True, clock=lambda: next(times))
    for _ in range(3):
        sampler.sample_once()
    sampler.stop()
    energy = run_energy(training_monitors([outcome(tmp_path / "node", "cpuhost")], window(1_000_000, 1_002_000), 1),
                        load_vendor("cpu"), 2000)
    assert energy.source.startswith("ipmitool, whole host")
    assert energy.energy_j == pytest.approx(215 * 2.0)
    assert energy.j_per_1k_samples == pytest.approx(215 * 2.0 / 2000 * 1000)
    assert [(e.host, e.device, e.samples, e.avg_w, e.max_w) for e in energy.devices] == \
        [("cpuhost", "host", 3, 215.0, 215.0)]


def test_the_monitors_sample_at_1_hz_and_ask_the_bmc_less_often(tmp_path: Path) -> None:
    assert MONITOR_INTERVAL_S <= 1.0
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "ipmitool", f"#!/bin/sh\necho asked >> '{tmp_path / 'asked'}'\ncat '{FIXTURES / IPMI}'\n")
    times = iter(float(second) for second in range(7))
    sampler = MonitorSampler(PathTransport("cpuhost", bin_dir), None, tmp_path / "monitor.csv", host_stats="none",
                             system_power=True, system_power_every=SYSTEM_POWER_EVERY, clock=lambda: next(times))
    rows = [sampler.sample_once() for _ in range(SYSTEM_POWER_EVERY + 2)]
    sampler.stop()
    asked = [round_ for round_, written in enumerate(rows) if written]
    assert asked == [0, SYSTEM_POWER_EVERY]
    assert len((tmp_path / "asked").read_text().splitlines()) == 2


# --------------------------------------------------------------------------- idle devices


def test_the_utilisation_warning_fires_on_an_idle_trace_and_not_on_a_busy_one(tmp_path: Path) -> None:
    idle = sample_trace(tmp_path / "idle", IDLE)
    monitors = training_monitors([outcome(tmp_path / "idle")], window(idle[0][0], idle[-1][0]), GPUS)
    warnings = low_device_use(monitors, 0.1)
    assert len(warnings) == GPUS
    assert warnings[0] == ("low device utilisation during training: gpu1 device 0: median 0%, max 0% "
                           "over 10 samples (cluster.min_device_util is 10%)")

    busy = sample_trace(tmp_path / "busy", TRAINING)
    monitors = training_monitors([outcome(tmp_path / "busy")], window(busy[0][0], busy[-1][0]), GPUS)
    assert low_device_use(monitors, 0.1) == []
    assert min(util for _, readings in busy for _, util in readings) == 84.0
    assert len(low_device_use(monitors, 0.95)) == GPUS  # a site that asks for more is told


def test_min_device_util_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"cluster": {"known_hosts": str(tmp_path / "kh")}, "hosts": []}))
    assert load_inventory(path).cluster.min_device_util == 0.1
    path.write_text(yaml.safe_dump({"cluster": {"min_device_util": 1.5}, "hosts": []}))
    with pytest.raises(UserError, match="min_device_util"):
        load_inventory(path)


# --------------------------------------------------------------------------- through the runner


class TraceBackend(FakeBackend):
    """The fake backend whose node comes back with a monitor.csv sampled from a recorded trace."""

    def __init__(self, events: list[tuple[int, str, dict]], trace: str) -> None:
        super().__init__([FakeNode(["exit:0"], {0: events})])
        self.trace = trace

    def collect(self, plan: RunPlan, dest: Path, node_ranks: list[int]) -> list[NodeOutcome]:
        outcomes = super().collect(plan, dest, node_ranks)
        sample_trace(Path(outcomes[0].log_dir), self.trace, host=outcomes[0].host)
        return outcomes


def test_the_runner_records_energy_and_the_idle_devices_of_the_job_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "POLL_S", 0.01)
    monkeypatch.setattr("harness.core.backend.PROGRESS_READ_S", 0.05)
    polls = recorded_polls(IDLE)
    start, stop = polls[1][0], polls[-2][0]
    events = [(start - 500, "process_start", {}), (start - 400, "world", {"node_rank": 0, "world_size": 1}),
              (start, "train_start", {}), (stop - 10, "step", {"samples": 256}),
              (stop, "train_stop", {"samples": 256, "steps": 1}), (stop + 10, "summary", {}),
              (stop + 20, "run_stop", {"status": "ok"})]
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"cluster": {"known_hosts": str(tmp_path / "kh")}, "hosts": [
        {"name": "alpha", "address": "10.0.0.1", "user": "root", "devices": 8, "work_dir": "/scratch"}]}))
    job = make_job("resnet50", "nvidia", "A100", "1x1", run_id="energy-run", timeout_s=30)
    run_job(job, load_inventory(path), TraceBackend(events, IDLE), tmp_path / "results",
            Console(file=io.StringIO(), width=200), limits=WatchLimits(timeout_s=30, stall_timeout_s=30, host_lost_s=30))
    recorded = json.loads((tmp_path / "results" / "energy-run" / "resnet50" / "1x1" / "results.json").read_text())
    energy = recorded["energy"]
    inside = device_points(polls[1:-1], 0)
    assert [entry["device"] for entry in energy["devices"]] == ["0"]  # the job ran on device 0 alone
    assert energy["energy_j"] == pytest.approx(trapezoid(inside), rel=1e-9)
    assert energy["j_per_1k_samples"] == pytest.approx(trapezoid(inside) / 256 * 1000, rel=1e-9)
    assert [w for w in recorded["warnings"] if "utilisation" in w] == [
        "low device utilisation during training: alpha device 0: median 0%, max 0% over 8 samples "
        "(cluster.min_device_util is 10%)"]
