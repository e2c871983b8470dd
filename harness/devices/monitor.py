"""Device and host monitors, read from the vendor's own tool.

Pure parsers turn one tool output into ``DeviceSample`` rows: nvidia-smi's
``--query-gpu`` CSV (with or without header and units), the nvidia-smi style
table that Iluvatar's ``ixsmi`` prints, and Kunlunxin's ``xpu_smi`` table and
``xpu_smi -m`` machine lines. ``SMI_TOOLS`` maps the key a vendor spec names
(``smi: ixsmi``) to the argv to run and its parser.

``MonitorSampler`` runs that tool through a Transport every few seconds in a
background thread and appends one CSV row per device (and one for the host's
CPU and memory) to a file per host; ``peak_memory`` reads the peak back for the
``mem`` column. A tool that fails is logged once and sampling goes on.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from harness.backends.transport import LocalTransport, Transport
from harness.errors import UserError

log = logging.getLogger(__name__)

MIB_PER_GIB = 1024.0
KIB_PER_GIB = 1024.0**2
BYTES_PER_GIB = 1024.0**3
INVALID_READING = 65535  # 0xFFFF: what a tool prints for a sensor it could not read

HostStatsSource = Literal["auto", "psutil", "proc", "none"]


@dataclass(frozen=True)
class DeviceSample:
    index: int
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    util_pct: float | None = None
    power_w: float | None = None
    temp_c: float | None = None


@dataclass(frozen=True)
class HostSample:
    cpu_pct: float | None
    mem_used_gib: float | None
    mem_total_gib: float | None


@dataclass(frozen=True)
class CpuTimes:
    """Jiffies from the aggregate ``cpu`` line of /proc/stat."""

    busy: int
    total: int


# --------------------------------------------------------------------------- nvidia-smi CSV

NVIDIA_QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "memory.used",
    "memory.total",
    "utilization.gpu",
    "power.draw",
    "temperature.gpu",
)
# --query-gpu field name -> DeviceSample attribute. Iluvatar's corex 4.x names
# the power field gpu.power.draw.
QUERY_FIELD_ATTRIBUTES: dict[str, str] = {
    "index": "index",
    "memory.used": "mem_used_mib",
    "memory.total": "mem_total_mib",
    "utilization.gpu": "util_pct",
    "power.draw": "power_w",
    "gpu.power.draw": "power_w",
    "power.draw.instant": "power_w",
    "temperature.gpu": "temp_c",
}
_UNAVAILABLE = re.compile(
    r"^\[?(n/a|not supported|unknown error|insufficient permissions|gpu is lost|not available)\]?$",
    re.IGNORECASE,
)
_HEADER_FIELD = re.compile(r"^[a-z_][a-z0-9_.]*$")
_UNIT_SUFFIX = re.compile(r"\s*(MiB|GiB|%|W|C|MHz)$")
_UNIT_IN_HEADER = re.compile(r"\s*\[[^\]]*\]$")


def _reading(text: str) -> float | None:
    """A number from one CSV cell; None for [N/A], [Not Supported] and friends."""
    value = text.strip()
    if not value or _UNAVAILABLE.match(value):
        return None
    value = _UNIT_SUFFIX.sub("", value)
    try:
        number = float(value)
    except ValueError:
        return None
    return None if number == INVALID_READING else number


def _header_fields(cells: list[str]) -> list[str] | None:
    names = [_UNIT_IN_HEADER.sub("", cell.strip()) for cell in cells]
    if names and all(_HEADER_FIELD.match(name) for name in names):
        return names
    return None


def parse_nvidia_smi_csv(text: str, fields: Iterable[str] = NVIDIA_QUERY_FIELDS) -> list[DeviceSample]:
    """``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]``.

    With a header the columns are read from it (any order, units in brackets
    ignored); without one they are ``fields``. Devices without an ``index``
    column are numbered in output order. Rows of the wrong width are skipped."""
    rows = [row for row in csv.reader(io.StringIO(text), skipinitialspace=True) if any(cell.strip() for cell in row)]
    if not rows:
        return []
    columns = _header_fields(rows[0])
    if columns is None:
        columns = list(fields)
    else:
        rows = rows[1:]
    samples: list[DeviceSample] = []
    for position, row in enumerate(rows):
        if len(row) != len(columns):
            continue
        values: dict[str, float | None] = {}
        for name, cell in zip(columns, row):
            attribute = QUERY_FIELD_ATTRIBUTES.get(name)
            if attribute is not None:
                values[attribute] = _reading(cell)
        index = values.pop("index", None)
        samples.append(DeviceSample(index=int(index) if index is not None else position, **values))
    return samples


# --------------------------------------------------------------------------- the nvidia-smi style table (ixsmi)

_BUS_ID = re.compile(r"[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]")
_TABLE_INDEX_AND_NAME = re.compile(r"^\s*(?P<index>\d+)\s+\S")
_TABLE_TEMP = re.compile(r"(?P<value>\d+(?:\.\d+)?)C\b")
_TABLE_POWER = re.compile(r"(?P<value>\d+(?:\.\d+)?)W\s*/")
_TABLE_MEMORY = re.compile(r"(?P<used>\d+(?:\.\d+)?)MiB\s*/\s*(?P<total>\d+(?:\.\d+)?)MiB")
_TABLE_UTIL = re.compile(r"(?P<value>\d+(?:\.\d+)?)\s*%")


def _table_cells(line: str) -> list[str]:
    text = line.strip()
    if not text.startswith("|"):
        return []
    return [cell.strip() for cell in text.strip("|").split("|")]


def _match_number(pattern: re.Pattern[str], text: str) -> float | None:
    match = pattern.search(text)
    if match is None:
        return None
    number = float(match.group("value"))
    return None if number == INVALID_READING else number


def parse_smi_table(text: str) -> list[DeviceSample]:
    """The default table of ``ixsmi`` (and of ``nvidia-smi``, which it mimics):
    a line ``| 0  Iluvatar BI-V100 | 00000000:14:00.0 | ...`` followed by
    ``| 0%  31C  P0  54W / 250W | 513MiB / 32768MiB | 0%  Default |``."""
    lines = text.splitlines()
    samples: list[DeviceSample] = []
    for position, line in enumerate(lines[:-1]):
        cells = _table_cells(line)
        if len(cells) < 3:
            continue
        head = _TABLE_INDEX_AND_NAME.match(cells[0])
        if head is None or not _BUS_ID.search(cells[1]):
            continue
        stats = _table_cells(lines[position + 1])
        if len(stats) < 3:
            continue
        memory = _TABLE_MEMORY.search(stats[1])
        samples.append(
            DeviceSample(
                index=int(head.group("index")),
                mem_used_mib=float(memory.group("used")) if memory else None,
                mem_total_mib=float(memory.group("total")) if memory else None,
                util_pct=_match_number(_TABLE_UTIL, stats[2]),
                power_w=_match_number(_TABLE_POWER, stats[0]),
                temp_c=_match_number(_TABLE_TEMP, stats[0]),
            )
        )
    return samples


# --------------------------------------------------------------------------- xpu_smi

_XPU_MEMORY = re.compile(r"(?P<used>\d+(?:\.\d+)?)\s*/\s*(?P<total>\d+(?:\.\d+)?)\s*MB")


def xpu_smi_rows(text: str) -> list[dict[str, str]]:
    """The device rows of ``xpu_smi``'s default DEVICES table, each as
    {column header: cell}. Columns are found by their header, since driver
    versions print different sets."""
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        cells = _table_cells(line)
        if header is None:
            if "DevID" in cells and ("PCI Addr" in cells or "UseRate" in cells):
                header = cells
            continue
        if not cells:
            if rows:
                break
            continue
        if len(cells) != len(header) or not cells[0].isdigit():
            continue
        rows.append(dict(zip(header, cells)))
    return rows


def parse_xpu_smi_table(text: str) -> list[DeviceSample]:
    """The DEVICES table of Kunlunxin's ``xpu_smi`` (``DevID``, ``UseRate``,
    ``Memory``, ``Power(W)``, ``Temp``); memory is ``used / total MB`` (MiB)."""
    samples: list[DeviceSample] = []
    for row in xpu_smi_rows(text):
        memory = _XPU_MEMORY.search(row.get("Memory", ""))
        samples.append(
            DeviceSample(
                index=int(row["DevID"]),
                mem_used_mib=float(memory.group("used")) if memory else None,
                mem_total_mib=float(memory.group("total")) if memory else None,
                util_pct=_reading(row["UseRate"].replace(" ", "")) if "UseRate" in row else None,
                power_w=_reading(row["Power(W)"]) if "Power(W)" in row else None,
                temp_c=_reading(row["Temp"]) if "Temp" in row else None,
            )
        )
    return samples


# Positions in one ``xpu_smi -m`` line (whitespace-separated, the model name quoted).
XPU_MACHINE_FIELDS = {"bus_id": 0, "index": 1, "temp_c": 4, "power_w": 8, "mem_used_mib": 17, "mem_total_mib": 18, "util_pct": 19}


def parse_xpu_smi_machine(text: str) -> list[DeviceSample]:
    """``xpu_smi -m``: one line per device, fields by position (bus id, device
    id, ..., temperature C at 4, power W at 8, memory used/total MiB at 17/18,
    utilisation % at 19)."""
    samples: list[DeviceSample] = []
    for line in text.splitlines():
        try:
            tokens = shlex.split(line)
        except ValueError:
            continue
        if len(tokens) <= XPU_MACHINE_FIELDS["util_pct"] or not _BUS_ID.fullmatch(tokens[0]):
            continue
        if not tokens[XPU_MACHINE_FIELDS["index"]].isdigit():
            continue
        samples.append(
            DeviceSample(
                index=int(tokens[XPU_MACHINE_FIELDS["index"]]),
                mem_used_mib=_reading(tokens[XPU_MACHINE_FIELDS["mem_used_mib"]]),
                mem_total_mib=_reading(tokens[XPU_MACHINE_FIELDS["mem_total_mib"]]),
                util_pct=_reading(tokens[XPU_MACHINE_FIELDS["util_pct"]]),
                power_w=_reading(tokens[XPU_MACHINE_FIELDS["power_w"]]),
                temp_c=_reading(tokens[XPU_MACHINE_FIELDS["temp_c"]]),
            )
        )
    return samples


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class SmiTool:
    key: str
    argv: tuple[str, ...]
    parse: Callable[[str], list[DeviceSample]]


def _parse_ixsmi_csv(text: str) -> list[DeviceSample]:
    return parse_nvidia_smi_csv(text, IXSMI_QUERY_FIELDS)


# ixsmi's CSV mode leaves power out: the field is power.draw in corex 3.x and
# gpu.power.draw in 4.x, and a wrong name fails the whole query.
IXSMI_QUERY_FIELDS: tuple[str, ...] = ("index", "memory.used", "memory.total", "utilization.gpu", "temperature.gpu")

SMI_TOOLS: dict[str, SmiTool] = {
    tool.key: tool
    for tool in (
        SmiTool(
            "nvidia-smi",
            ("nvidia-smi", f"--query-gpu={','.join(NVIDIA_QUERY_FIELDS)}", "--format=csv,noheader,nounits"),
            parse_nvidia_smi_csv,
        ),
        SmiTool("ixsmi", ("ixsmi",), parse_smi_table),
        SmiTool(
            "ixsmi-csv",
            ("ixsmi", f"--query-gpu={','.join(IXSMI_QUERY_FIELDS)}", "--format=csv,nounits"),
            _parse_ixsmi_csv,
        ),
        SmiTool("xpu_smi", ("xpu_smi",), parse_xpu_smi_table),
        SmiTool("xpu_smi-m", ("xpu_smi", "-m"), parse_xpu_smi_machine),
    )
}


def smi_tool(key: str) -> SmiTool:
    tool = SMI_TOOLS.get(key)
    if tool is None:
        raise UserError(f"unknown device monitor {key!r}; expected one of: {', '.join(sorted(SMI_TOOLS))}", field="smi")
    return tool


# --------------------------------------------------------------------------- the host


def sample_local_host() -> HostSample:
    """This machine's CPU and memory, from psutil (CPU % since the previous call)."""
    memory = psutil.virtual_memory()
    return HostSample(
        cpu_pct=psutil.cpu_percent(interval=None),
        mem_used_gib=(memory.total - memory.available) / BYTES_PER_GIB,
        mem_total_gib=memory.total / BYTES_PER_GIB,
    )


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat. Idle time is idle + iowait;
    guest time is already inside user, so only the first eight fields count."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            jiffies = [int(part) for part in parts[1:9]]
            idle = jiffies[3] + (jiffies[4] if len(jiffies) > 4 else 0)
            total = sum(jiffies)
            return CpuTimes(busy=total - idle, total=total)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def cpu_percent_between(earlier: CpuTimes, later: CpuTimes) -> float | None:
    elapsed = later.total - earlier.total
    if elapsed <= 0:
        return None
    return 100.0 * (later.busy - earlier.busy) / elapsed


def parse_meminfo(text: str) -> tuple[float, float]:
    """(used GiB, total GiB) from /proc/meminfo; used is MemTotal - MemAvailable."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0])
    if "MemTotal" not in values:
        raise ValueError("no MemTotal in /proc/meminfo")
    available = values.get("MemAvailable")
    if available is None:
        available = values.get("MemFree", 0) + values.get("Buffers", 0) + values.get("Cached", 0)
    total = values["MemTotal"]
    return (total - available) / KIB_PER_GIB, total / KIB_PER_GIB


_IPMI_POWER = re.compile(r"Instantaneous power reading:\s*(?P<watts>\d+(?:\.\d+)?)\s*Watts", re.IGNORECASE)
_IPMI_STATE = re.compile(r"Power reading state is:\s*(?P<state>\w+)", re.IGNORECASE)


def parse_ipmitool_power(text: str) -> float | None:
    """Watts from ``ipmitool dcmi power reading``; None when absent, or when a
    BMC with the reading deactivated reports 0."""
    match = _IPMI_POWER.search(text)
    if match is None:
        return None
    watts = float(match.group("watts"))
    state = _IPMI_STATE.search(text)
    if watts == 0 and state is not None and state.group("state").lower() == "deactivated":
        return None
    return watts


IPMI_POWER_ARGV = ("ipmitool", "dcmi", "power", "reading")
PROC_ARGV = ("cat", "/proc/stat", "/proc/meminfo")


# --------------------------------------------------------------------------- the sampler

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
)


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


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
        ]


class MonitorSampler:
    """Samples one host every ``interval_s`` seconds into ``csv_path``.

    Device rows come from the smi tool named by ``smi`` (a key of SMI_TOOLS, or
    None for none). The host row comes from psutil on the controller's own
    machine and from /proc read through the transport elsewhere
    (``host_stats="auto"``). ``system_power`` adds ``ipmitool dcmi power
    reading``. Each failing probe is logged once; sampling continues.
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
        clock: Callable[[], float] = time.time,
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
        self.clock = clock
        self.failures: dict[str, int] = {}  # probe -> failed samples
        self.last_errors: dict[str, str] = {}
        self.samples_taken = 0
        self._previous_cpu: CpuTimes | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: io.TextIOWrapper | None = None
        self._writer: Any = None  # csv.writer over _file

    # -- probes

    def _failed(self, probe: str, message: str) -> None:
        if probe not in self.failures:
            log.warning("%s: %s monitor failed, will keep sampling: %s", self.transport.host, probe, message)
        self.failures[probe] = self.failures.get(probe, 0) + 1
        self.last_errors[probe] = message

    def _run(self, probe: str, argv: tuple[str, ...]) -> str | None:
        try:
            result = self.transport.run(list(argv), timeout=self.timeout_s)
        except Exception as exc:  # a transport that raises must not kill the sampler
            self._failed(probe, f"{type(exc).__name__}: {exc}")
            return None
        if not result.ok:
            status = "timed out" if result.exit_code is None else f"exited {result.exit_code}"
            tail = result.output.strip().splitlines()[-1:] or [""]
            self._failed(probe, f"`{' '.join(argv)}` {status}: {tail[0]}")
            return None
        return result.output

    def _devices(self) -> list[DeviceSample]:
        if self.tool is None:
            return []
        output = self._run(self.tool.key, self.tool.argv)
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

    def _host(self) -> HostSample | None:
        if self.host_stats == "none":
            return None
        if self.host_stats == "psutil":
            return sample_local_host()
        output = self._run("proc", PROC_ARGV)
        if output is None:
            return None
        try:
            times = parse_proc_stat(output)
            used, total = parse_meminfo(output)
        except ValueError as exc:
            self._failed("proc", str(exc))
            return None
        cpu = cpu_percent_between(self._previous_cpu, times) if self._previous_cpu else None
        self._previous_cpu = times
        return HostSample(cpu_pct=cpu, mem_used_gib=used, mem_total_gib=total)

    def _system_power(self) -> float | None:
        if not self.system_power:
            return None
        try:
            result = self.transport.run(list(IPMI_POWER_ARGV), timeout=self.timeout_s)
        except Exception as exc:  # a transport that raises must not kill the sampler
            self._failed("ipmitool", f"{type(exc).__name__}: {exc}")
            return None
        if result.exit_code in (127, 1) and not result.output.strip().startswith("Instantaneous"):
            # No ipmitool, or no BMC behind it: system power is simply not available here.
            self.system_power = False
            self.last_errors["ipmitool"] = result.output.strip()[-200:] or "not available"
            return None
        if not result.ok:
            self._failed("ipmitool", f"exited {result.exit_code}: {result.output.strip()[-200:]}")
            return None
        return parse_ipmitool_power(result.output)

    # -- one sample, the loop

    def sample_once(self) -> list[MonitorRow]:
        timestamp_ms = int(self.clock() * 1000)
        host = self.transport.host
        rows = [MonitorRow(timestamp_ms, host, device=device) for device in self._devices()]
        host_sample = self._host()
        power = self._system_power()
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

    def start(self) -> MonitorSampler:
        if self._thread is not None:
            return self
        if self.host_stats == "psutil":
            psutil.cpu_percent(interval=None)  # the first call only primes the counter
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"monitor-{self.transport.host}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.timeout_s + self.interval_s + 5)
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


def read_device_rows(csv_path: Path) -> list[tuple[int, DeviceSample]]:
    """(timestamp_ms, sample) for every device row of a monitor CSV."""
    rows: list[tuple[int, DeviceSample]] = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            if record.get("kind") != "device" or not record.get("device_index"):
                continue

            def number(name: str) -> float | None:
                value = record.get(name) or ""
                return float(value) if value else None

            rows.append(
                (
                    int(record["timestamp_ms"]),
                    DeviceSample(
                        index=int(record["device_index"]),
                        mem_used_mib=number("mem_used_mib"),
                        mem_total_mib=number("mem_total_mib"),
                        util_pct=number("util_pct"),
                        power_w=number("power_w"),
                        temp_c=number("temp_c"),
                    ),
                )
            )
    return rows


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
