"""The monitor: samples one host's devices, CPU and memory every few seconds
into a CSV file, reads the rows back (read_monitor), and the peak device memory
for the ``mem`` column.

``MonitorSampler`` runs the vendor's device tool (registry.SMI_TOOLS) and appends
one CSV row per device, and one for the host's CPU, memory and (from ipmitool)
system power. On the controller's own machine it polls them from a background
thread; on another host it listens to one long-lived command that runs them in
a loop there (monitor_stream.py). A tool that fails is logged once and sampling
goes on.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from harness.backends.node_stream import NodeStream
from harness.backends.transport import CommandResult, LocalTransport, Transport
from harness.devices.host import (
    PROC_ARGV,
    CpuTimes,
    HostSample,
    cpu_percent_between,
    parse_meminfo,
    parse_proc_stat,
    sample_local_host,
)
from harness.devices.ipmitool import IPMI_POWER_ARGV, parse_ipmitool_power
from harness.devices.monitor_stream import RoundParser, monitor_argv
from harness.devices.readings import DeviceSample
from harness.devices.registry import smi_tool

log = logging.getLogger(__name__)

PROC_PROBE = "proc"
IPMI_PROBE = "ipmitool"

MIB_PER_GIB = 1024.0

HostStatsSource = Literal["auto", "psutil", "proc", "none"]

CSV_COLUMNS: tuple[str, ...] = (
    "timestamp_ms",
    "host",
    "kind",
    "device_index",
    "mem_used_mib",
    "mem_total_mib",
    "util_pct",
    "power_w",
    "temp_c",
    "cpu_pct",
    "mem_used_gib",
    "mem_total_gib",
    "system_power_w",
    "clock_mhz",  # the device's SM clock
    "throttle",  # its active throttle reasons mask in hex (0x4), empty when the tool does not tell
)


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def _mask_cell(mask: int | None) -> str:
    return "" if mask is None else f"{mask:#x}"


@dataclass(frozen=True)
class MonitorRow:
    timestamp_ms: int
    host: str
    device: DeviceSample | None = None  # a device row
    host_sample: HostSample | None = None  # or the host row
    system_power_w: float | None = None

    @property
    def kind(self) -> str:
        return "device" if self.device is not None else "host"

    def csv_cells(self) -> list[str]:
        device = self.device
        host = self.host_sample
        return [
            str(self.timestamp_ms),
            self.host,
            self.kind,
            _cell(device.index) if device else "",
            _cell(device.mem_used_mib) if device else "",
            _cell(device.mem_total_mib) if device else "",
            _cell(device.util_pct) if device else "",
            _cell(device.power_w) if device else "",
            _cell(device.temp_c) if device else "",
            _cell(host.cpu_pct) if host else "",
            _cell(host.mem_used_gib) if host else "",
            _cell(host.mem_total_gib) if host else "",
            _cell(self.system_power_w),
            _cell(device.clock_mhz) if device else "",
            _mask_cell(device.throttle_mask) if device else "",
        ]


class MonitorSampler:
    """Samples one host every ``interval_s`` seconds into ``csv_path``.

    Device rows come from the smi tool named by ``smi`` (a key of registry.SMI_TOOLS, or
    None for none). The host row comes from psutil on the controller's own
    machine and from /proc read through the transport elsewhere
    (``host_stats="auto"``). ``system_power`` adds ``ipmitool dcmi power
    reading`` (every ``system_power_every``-th round). Each failing probe is
    logged once; sampling continues.
    """

    def __init__(
        self,
        transport: Transport,
        smi: str | None,
        csv_path: Path,
        *,
        interval_s: float = 5.0,
        timeout_s: float = 10.0,
        host_stats: HostStatsSource = "auto",
        system_power: bool = False,
        system_power_every: int = 1,
        clock: Callable[[], float] = time.time,
        streamed: bool | None = None,
    ) -> None:
        self.transport = transport
        self.tool = smi_tool(smi) if smi else None
        self.csv_path = csv_path
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        if host_stats == "auto":
            host_stats = "psutil" if isinstance(transport, LocalTransport) else "proc"
        self.host_stats: HostStatsSource = host_stats
        self.system_power = system_power
        self.system_power_every = max(1, system_power_every)  # ask the BMC every n-th round only
        self.clock = clock
        self.failures: dict[str, int] = {}  # probe -> failed samples
        self.last_errors: dict[str, str] = {}
        self.samples_taken = 0
        self._previous_cpu: CpuTimes | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: NodeStream | None = None
        # None: listen to a stream on another host, poll this one
        self.streamed = not isinstance(transport, LocalTransport) if streamed is None else streamed
        self._file: io.TextIOWrapper | None = None
        self._writer: Any = None  # csv.writer over _file

    # -- probes: each answer is a CommandResult, whether polled (run) or heard on the stream

    def _failed(self, probe: str, message: str) -> None:
        if probe not in self.failures:
            log.warning("%s: %s monitor failed, will keep sampling: %s", self.transport.host, probe, message)
        self.failures[probe] = self.failures.get(probe, 0) + 1
        self.last_errors[probe] = message

    def _run(self, probe: str, argv: tuple[str, ...]) -> CommandResult | None:
        try:
            return self.transport.run(list(argv), timeout=self.timeout_s)
        except Exception as exc:  # a transport that raises must not kill the sampler
            self._failed(probe, f"{type(exc).__name__}: {exc}")
            return None

    def _output(self, probe: str, result: CommandResult | None) -> str | None:
        if result is None:
            return None
        if not result.ok:
            status = "timed out" if result.exit_code is None else f"exited {result.exit_code}"
            tail = result.output.strip().splitlines()[-1:] or [""]
            self._failed(probe, f"`{' '.join(result.argv)}` {status}: {tail[0]}")
            return None
        return result.output

    def _devices(self, result: CommandResult | None) -> list[DeviceSample]:
        if self.tool is None:
            return []
        output = self._output(self.tool.key, result)
        if output is None:
            return []
        try:
            samples = self.tool.parse(output)
        except Exception as exc:
            self._failed(self.tool.key, f"could not parse output: {exc}")
            return []
        if not samples:
            self._failed(self.tool.key, "no devices in output")
        return samples

    def _host(self, result: CommandResult | None) -> HostSample | None:
        if self.host_stats == "none":
            return None
        if self.host_stats == "psutil":
            return sample_local_host()
        output = self._output(PROC_PROBE, result)
        if output is None:
            return None
        try:
            times = parse_proc_stat(output)
            used, total = parse_meminfo(output)
        except ValueError as exc:
            self._failed(PROC_PROBE, str(exc))
            return None
        cpu = cpu_percent_between(self._previous_cpu, times) if self._previous_cpu else None
        self._previous_cpu = times
        return HostSample(cpu_pct=cpu, mem_used_gib=used, mem_total_gib=total)

    def _system_power(self, result: CommandResult | None) -> float | None:
        if result is None or not self.system_power:
            return None
        if result.exit_code in (127, 1) and not result.output.strip().startswith("Instantaneous"):
            # No ipmitool, or no BMC behind it: system power is simply not available here
            # (the stream's script stops asking too).
            self.system_power = False
            self.last_errors[IPMI_PROBE] = result.output.strip()[-200:] or "not available"
            return None
        output = self._output(IPMI_PROBE, result)
        return parse_ipmitool_power(output) if output is not None else None

    # -- one round, polled or heard; the loops

    def probes(self) -> dict[str, tuple[str, ...]]:
        """What one round runs on the host, by probe name (ipmitool: on its rounds only)."""
        wanted: dict[str, tuple[str, ...]] = {}
        if self.tool is not None:
            wanted[self.tool.key] = self.tool.argv
        if self.host_stats == "proc":
            wanted[PROC_PROBE] = PROC_ARGV
        if self.system_power:
            wanted[IPMI_PROBE] = IPMI_POWER_ARGV
        return wanted

    def sample_once(self) -> list[MonitorRow]:
        """Run this round's probes through the transport, one command each, and record them."""
        timestamp_ms = int(self.clock() * 1000)
        due = self.samples_taken % self.system_power_every == 0
        answers: dict[str, CommandResult | None] = {
            probe: self._run(probe, argv) for probe, argv in self.probes().items() if probe != IPMI_PROBE or due}
        return self.record_round(timestamp_ms, answers)

    def record_round(self, timestamp_ms: int, answers: Mapping[str, CommandResult | None]) -> list[MonitorRow]:
        """The rows of one round from its probes' answers (a probe absent: not asked this round)."""
        host = self.transport.host
        rows = [MonitorRow(timestamp_ms, host, device=device)
                for device in self._devices(answers.get(self.tool.key) if self.tool else None)]
        host_sample = self._host(answers.get(PROC_PROBE))
        power = self._system_power(answers.get(IPMI_PROBE))
        if host_sample is not None or power is not None:
            rows.append(MonitorRow(timestamp_ms, host, host_sample=host_sample, system_power_w=power))
        self._write(rows)
        self.samples_taken += 1
        return rows

    def _write(self, rows: list[MonitorRow]) -> None:
        with self._lock:
            if self._file is None:
                self.csv_path.parent.mkdir(parents=True, exist_ok=True)
                is_new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
                self._file = self.csv_path.open("a", newline="", encoding="utf-8")
                self._writer = csv.writer(self._file)
                if is_new:
                    self._writer.writerow(CSV_COLUMNS)
            assert self._writer is not None
            for row in rows:
                self._writer.writerow(row.csv_cells())
            self._file.flush()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample_once()
            except Exception as exc:  # keep sampling whatever one round did
                self._failed("sampler", f"{type(exc).__name__}: {exc}")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def _heard(self, timestamp_ms: int, answers: dict[str, CommandResult]) -> None:
        try:
            self.record_round(timestamp_ms, answers)
        except Exception as exc:  # keep listening whatever one round did
            self._failed("sampler", f"{type(exc).__name__}: {exc}")

    def start(self) -> MonitorSampler:
        """Poll on this machine; elsewhere, listen to one long-lived command that runs
        the probes on the host (monitor_stream.py): a new SSH command a second per
        host costs the host a login shell each."""
        if self._thread is not None or self._stream is not None:
            return self
        if self.host_stats == "psutil":
            psutil.cpu_percent(interval=None)  # the first call only primes the counter
        self._stop.clear()
        if self.streamed:
            probes = self.probes()
            rounds = RoundParser(self.transport.host, probes, self._heard, self.clock)
            every_nth = {IPMI_PROBE: self.system_power_every} if IPMI_PROBE in probes else {}
            argv = monitor_argv(probes, self.interval_s, self.timeout_s, every_nth)
            self._stream = NodeStream(f"{self.transport.host}'s monitor", self.transport, argv, rounds.feed,
                                      lambda message: log.info("%s", message)).start()
            return self
        self._thread = threading.Thread(target=self._loop, name=f"monitor-{self.transport.host}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        wait_s = timeout if timeout is not None else self.timeout_s + self.interval_s + 5
        if self._stream is not None:
            self._stream.close(wait_s)
            self._stream = None
        if self._thread is not None:
            self._thread.join(wait_s)
            self._thread = None
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
                self._writer = None

    def __enter__(self) -> MonitorSampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


MonitorRecord = MonitorRow  # what read_monitor gives back: a row as the sampler wrote it
_NO_HOST_READING = HostSample(cpu_pct=None, mem_used_gib=None, mem_total_gib=None)  # a row of system power alone


def _number(record: dict[str, str | None], name: str) -> float | None:
    value = (record.get(name) or "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _mask(record: dict[str, str | None], name: str) -> int | None:
    value = (record.get(name) or "").strip()
    try:
        return int(value, 16) if value else None
    except ValueError:
        return None


def read_monitor(csv_path: Path) -> list[MonitorRecord]:
    """Every row of a monitor CSV, device and host, by the header's column
    names: a file written before a column existed (clock_mhz, throttle) reads
    with that reading None. A line that is not a device row (with its index) or
    a host row under a whole-number timestamp, such as one cut short when a
    sampler was killed, is skipped."""
    rows: list[MonitorRecord] = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            stamp = (record.get("timestamp_ms") or "").strip()
            if not stamp.isdigit():
                continue
            host = record.get("host") or ""
            if record.get("kind") == "device":
                index = _number(record, "device_index")
                if index is None:
                    continue
                device = DeviceSample(
                    index=int(index),
                    mem_used_mib=_number(record, "mem_used_mib"),
                    mem_total_mib=_number(record, "mem_total_mib"),
                    util_pct=_number(record, "util_pct"),
                    power_w=_number(record, "power_w"),
                    temp_c=_number(record, "temp_c"),
                    clock_mhz=_number(record, "clock_mhz"),
                    throttle_mask=_mask(record, "throttle"),
                )
                rows.append(MonitorRow(int(stamp), host, device=device))
            elif record.get("kind") == "host":
                host_sample = HostSample(cpu_pct=_number(record, "cpu_pct"),
                                         mem_used_gib=_number(record, "mem_used_gib"),
                                         mem_total_gib=_number(record, "mem_total_gib"))
                rows.append(MonitorRow(int(stamp), host,
                                       host_sample=None if host_sample == _NO_HOST_READING else host_sample,
                                       system_power_w=_number(record, "system_power_w")))
    return rows


def read_device_rows(csv_path: Path) -> list[tuple[int, DeviceSample]]:
    """(timestamp_ms, sample) for every device row of a monitor CSV."""
    return [(row.timestamp_ms, row.device) for row in read_monitor(csv_path) if row.device is not None]


def peak_memory(csv_path: Path, device_indices: Iterable[int] | None = None) -> tuple[float, float | None] | None:
    """(peak used GiB, that device's total GiB) over the device rows of a
    monitor CSV, for the ``mem`` column; None when no row has a memory reading.
    The total is None only when the tool never reported one."""
    if not csv_path.is_file():
        return None
    wanted = set(device_indices) if device_indices is not None else None
    peak: DeviceSample | None = None
    totals: dict[int, float] = {}
    for _, sample in read_device_rows(csv_path):
        if wanted is not None and sample.index not in wanted:
            continue
        if sample.mem_total_mib is not None:
            totals[sample.index] = max(totals.get(sample.index, 0.0), sample.mem_total_mib)
        if sample.mem_used_mib is None:
            continue
        if peak is None or sample.mem_used_mib > (peak.mem_used_mib or 0.0):
            peak = sample
    if peak is None or peak.mem_used_mib is None:
        return None
    total = totals.get(peak.index)
    return peak.mem_used_mib / MIB_PER_GIB, total / MIB_PER_GIB if total is not None else None
