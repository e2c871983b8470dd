"""Device monitors on recorded tool output (tests/fixtures/smi, see its README),
host sampling on this machine's real /proc, and the background sampler."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import psutil
import pytest

from harness.backends.transport import CommandResult, FetchedFiles, LocalTransport, Transport
from harness.devices.host import cpu_percent_between, parse_meminfo, parse_proc_stat, sample_local_host
from harness.devices.ipmitool import IPMI_POWER_ARGV, parse_ipmitool_power
from harness.devices.ixsmi import parse_process_table, parse_smi_table
from harness.devices.kernel_log import newer_than, parse_kernel_events
from harness.devices.nvidia_smi import (
    NVIDIA_SMI_ECC_ARGV,
    NVIDIA_SMI_PROCESSES_ARGV,
    XID_MARKER,
    parse_compute_apps,
    parse_ecc_counters,
    parse_nvidia_smi_csv,
    parse_query_csv,
)
from harness.devices.readings import DeviceProcess, DeviceSample
from harness.devices.registry import SMI_TOOLS, health_queries, smi_tool
from harness.devices.sampler import CSV_COLUMNS, MonitorSampler, peak_memory, read_device_rows
from harness.devices.xpu_smi import (
    parse_xpu_smi_inventory,
    parse_xpu_smi_machine,
    parse_xpu_smi_processes,
    parse_xpu_smi_table,
)
from harness.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures" / "smi"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- nvidia-smi CSV


def test_nvidia_csv_with_header_and_units() -> None:
    samples = parse_nvidia_smi_csv(fixture("nvidia-smi_csv_header_units_2gpu.txt"))
    assert samples == [
        DeviceSample(index=0, mem_used_mib=2856, mem_total_mib=11175, util_pct=36, power_w=106.56, temp_c=60),
        DeviceSample(index=1, mem_used_mib=4, mem_total_mib=6078, util_pct=0, power_w=5.68, temp_c=49),
    ]


def test_nvidia_csv_na_fields() -> None:
    (gb10,) = parse_nvidia_smi_csv(fixture("nvidia-smi_csv_header_na_gb10.txt"))
    assert gb10 == DeviceSample(index=0, mem_used_mib=None, mem_total_mib=None, util_pct=0, power_w=11.17, temp_c=35)


@pytest.mark.parametrize(
    "name", ["nvidia-smi_csv_noheader_nounits_na.txt", "nvidia-smi_csv_noheader_nounits_not_supported.txt"]
)
def test_nvidia_csv_without_header_uses_the_query_fields(name: str) -> None:
    fields = ("memory.total", "memory.free", "memory.used", "temperature.gpu", "fan.speed", "utilization.gpu", "utilization.memory")
    (sample,) = parse_nvidia_smi_csv(fixture(name), fields)
    assert sample == DeviceSample(index=0, mem_used_mib=0, mem_total_mib=2004, util_pct=0, power_w=None, temp_c=44)


# The 19 fields of the recorded query in nvidia-smi_csv_noheader_nounits_rtx2080.txt.
RTX2080_QUERY_FIELDS = (
    "power.limit", "power.min_limit", "power.max_limit", "memory.total", "vbios_version", "driver_version", "name",
    "gpu_uuid", "power.draw", "temperature.gpu", "temperature.memory", "clocks.current.graphics", "clocks.sm",
    "clocks.mem", "utilization.gpu", "utilization.memory", "fan.speed", "pcie.link.width.current", "pstate",
)


def test_nvidia_csv_many_fields() -> None:
    (sample,) = parse_nvidia_smi_csv(fixture("nvidia-smi_csv_noheader_nounits_rtx2080.txt"), RTX2080_QUERY_FIELDS)
    assert sample == DeviceSample(index=0, mem_used_mib=None, mem_total_mib=7979, util_pct=86, power_w=176.98, temp_c=45,
                                  clock_mhz=1965)  # clocks.sm; no throttle field asked
    # the same line read with the default query's six columns has the wrong width: skipped, not misread
    assert parse_nvidia_smi_csv(fixture("nvidia-smi_csv_noheader_nounits_rtx2080.txt")) == []


def test_inventory_csv() -> None:
    (row,) = parse_query_csv(fixture("nvidia-smi_csv_noheader_nounits_rtx2080.txt"), RTX2080_QUERY_FIELDS)
    assert (row["name"], row["memory.total"], row["driver_version"]) == ("GeForce RTX 2080", "7979", "440.64")


# --------------------------------------------------------------------------- ixsmi


def test_ixsmi_table_bi_v100() -> None:
    samples = parse_smi_table(fixture("ixsmi_table_bi-v100_corex-3.0.1.txt"))
    assert [sample.index for sample in samples] == list(range(7))
    assert samples[0] == DeviceSample(index=0, mem_used_mib=513, mem_total_mib=32768, util_pct=0, power_w=54, temp_c=31,
                                      clock_mhz=1500)  # Clock-SM; the table tells no throttle reasons
    assert samples[5].power_w == 57 and samples[4].temp_c == 32


def test_ixsmi_table_bad_sensor_reading() -> None:
    samples = {sample.index: sample for sample in parse_smi_table(fixture("ixsmi_table_bi-v100_partial_bad_reading.txt"))}
    assert sorted(samples) == [4, 5, 6, 7]
    assert samples[5].power_w is None  # 65535W is the "could not read" value
    assert samples[5].util_pct == 100 and samples[5].temp_c == 0
    assert (samples[5].clock_mhz, samples[4].clock_mhz) == (25, 1500)  # as printed: "25MHz  33MHz"


def test_ixsmi_table_bi_v150_power_na() -> None:
    samples = parse_smi_table(fixture("ixsmi_table_bi-v150_corex-4.3.0.txt"))
    assert len(samples) == 16
    assert samples[0].power_w is None and samples[1].power_w == 103
    assert samples[15] == DeviceSample(index=15, mem_used_mib=64, mem_total_mib=32768, util_pct=0, power_w=107, temp_c=36,
                                       clock_mhz=1500)


# --------------------------------------------------------------------------- xpu_smi


def test_xpu_smi_table_k200() -> None:
    samples = parse_xpu_smi_table(fixture("xpu_smi_table_k200_driver-4.0.txt"))
    assert samples == [
        DeviceSample(index=0, mem_used_mib=0, mem_total_mib=8064, util_pct=0, power_w=37, temp_c=41, clock_mhz=900),
        DeviceSample(index=1, mem_used_mib=0, mem_total_mib=8064, util_pct=0, power_w=37, temp_c=39, clock_mhz=900),
        DeviceSample(index=2, mem_used_mib=0, mem_total_mib=8064, util_pct=0, power_w=36, temp_c=39, clock_mhz=900),
        DeviceSample(index=3, mem_used_mib=0, mem_total_mib=8064, util_pct=0, power_w=36, temp_c=39, clock_mhz=900),
    ]


def test_xpu_smi_table_r300_short_columns_and_other_sections() -> None:
    samples = parse_xpu_smi_table(fixture("xpu_smi_table_r300_runtime-4.31.txt"))
    # only DEVICES: the VIDEO and PROCESSES tables (which also have a DevID column) are not devices
    assert samples == [
        DeviceSample(index=0, mem_used_mib=0, mem_total_mib=32768, util_pct=0),
        DeviceSample(index=1, mem_used_mib=0, mem_total_mib=32768, util_pct=0),
    ]


def test_xpu_smi_inventory() -> None:
    models, totals, driver = parse_xpu_smi_inventory(fixture("xpu_smi_table_k200_driver-4.0.txt"))
    assert (models, totals, driver) == (["K200"] * 4, [8064.0] * 4, "4.0")
    models, totals, driver = parse_xpu_smi_inventory(fixture("xpu_smi_table_r300_runtime-4.31.txt"))
    assert (models, totals, driver) == (["R300", "R300"], [32768.0, 32768.0], "4.0")


def test_xpu_smi_machine_mode() -> None:
    samples = parse_xpu_smi_machine(fixture("xpu_smi_m_p800.txt"))
    assert samples == [
        DeviceSample(index=0, mem_used_mib=90440, mem_total_mib=98304, util_pct=0, power_w=86, temp_c=36),
        DeviceSample(index=1, mem_used_mib=90440, mem_total_mib=98304, util_pct=0, power_w=86, temp_c=39),
    ]
    assert parse_xpu_smi_machine("XPU-SMI\n\nnot a row\n") == []


def test_registry() -> None:
    assert {"nvidia-smi", "ixsmi", "xpu_smi"} <= set(SMI_TOOLS)
    nvidia = smi_tool("nvidia-smi")
    assert nvidia.argv == (
        "nvidia-smi",
        "--query-gpu=index,memory.used,memory.total,utilization.gpu,power.draw,temperature.gpu,clocks.sm,"
        "clocks_throttle_reasons.active",
        "--format=csv,noheader,nounits",
    )
    assert smi_tool("ixsmi").parse is parse_smi_table
    assert smi_tool("xpu_smi").argv == ("xpu_smi",) and smi_tool("xpu_smi-m").argv == ("xpu_smi", "-m")
    with pytest.raises(UserError, match="unknown device monitor"):
        smi_tool("npu-smi")


# --------------------------------------------------------------------------- health gate queries


def test_compute_apps_with_header_units_and_a_process_of_another_namespace() -> None:
    processes = parse_compute_apps(fixture("nvidia-smi_compute_apps_header_units_8gpu.txt"))
    assert len(processes) == 8
    assert processes[0] == DeviceProcess(pid=1328667, name="/usr/local/bin/python3.10", used_mib=130004,
                                         device="GPU-a44622e3-2296-6285-0a86-84d0f6c67900")
    assert processes[-1].name == "[Not Found]" and processes[-1].used_mib == 58060  # pid not visible to the tool
    assert processes[-1].describe() == \
        "pid 1758887 ([Not Found], 58060 MiB) on device GPU-28780eb0-24d5-1f13-59b8-ae5c23617a72"


def test_compute_apps_header_names_the_memory_column_used_gpu_memory() -> None:
    processes = parse_compute_apps(fixture("nvidia-smi_compute_apps_header_units_l40s.txt"))
    assert [(p.pid, p.name, p.used_mib, p.device) for p in processes] == [
        (44378, "tritonserver", 1836, None),
        (44966, "/opt/tritonserver/backends/python/triton_python_backend_stub", 974, None),
        (52114, "/usr/bin/python3", 6294, None),
    ]


def test_compute_apps_without_header_uses_the_queried_fields() -> None:
    fields = ("timestamp", "gpu_name", "pid", "process_name", "used_memory")
    (process,) = parse_compute_apps(fixture("nvidia-smi_compute_apps_noheader_nounits_rtx3090.txt"), fields)
    assert process == DeviceProcess(pid=1106871, name="/app/llama-server", used_mib=23342,
                                    device="NVIDIA GeForce RTX 3090")


def test_no_compute_process_is_an_empty_list() -> None:
    assert parse_compute_apps(fixture("nvidia-smi_compute_apps_header_only.txt")) == []
    assert parse_compute_apps("") == []  # what --format=csv,noheader prints with nothing running
    assert NVIDIA_SMI_PROCESSES_ARGV == ("nvidia-smi", "--query-compute-apps=pid,process_name,used_memory",
                                         "--format=csv,noheader,nounits")


def test_ecc_counters_read_by_header_among_many_columns() -> None:
    devices = parse_ecc_counters(fixture("nvidia-smi_query_ecc_8xh100.txt"))
    assert [device.index for device in devices] == list(range(8))
    assert devices[3].counts == {"uncorrected_volatile": 0, "uncorrected_aggregate": 0, "corrected_volatile": 0,
                                 "corrected_aggregate": 0}
    assert NVIDIA_SMI_ECC_ARGV[1] == ("--query-gpu=index,ecc.errors.uncorrected.volatile.total,"
                                      "ecc.errors.uncorrected.aggregate.total,ecc.errors.corrected.volatile.total,"
                                      "ecc.errors.corrected.aggregate.total")


def test_process_tables_of_the_default_output() -> None:
    rows = parse_process_table(fixture("nvidia-smi_table_processes_5rows.txt"))
    assert [(p.device, p.pid, p.name, p.used_mib) for p in rows] == [
        ("0", 10734, "...-x86_64-Release/abcdefgh/foo_bar", 160),
        ("0", 58661, ".../abcdefgh/123456/bin/abcde/bazbaz", 3),
        ("1", 10734, "...-x86_64-Release/abcdefgh/foo_bar", 160),
        ("2", 18243, "/usr/bin/X", 64),
        ("2", 22720, "/usr/bin/gnome-shell", 34),
    ]
    for name in ("ixsmi_table_bi-v150_corex-4.3.0.txt", "ixsmi_table_bi-v100_corex-3.0.1.txt"):
        assert parse_process_table(fixture(name)) == []  # "No running processes found"
    for name in ("xpu_smi_table_r300_runtime-4.31.txt", "xpu_smi_table_k200_driver-4.0.txt"):
        assert parse_xpu_smi_processes(fixture(name)) == []  # an empty PROCESSES table / none at all


def test_xid_lines_of_the_kernel_log() -> None:
    events = parse_kernel_events(fixture("dmesg_nvrm_xid_3lines.txt"), XID_MARKER)
    assert [event.at_s for event in events] == [24128.828315, 24128.828608, 24128.834365]
    assert events[-1].text == "NVRM: Xid (PCI:0000:01:00): 31, Ch 00000003, engmask 00000101, intr 10000000"
    assert newer_than(events, 24128.828608, 2) == events[2:]
    assert newer_than(events, None, 0) == events
    # NVRM lines that are not XID events (a GPU that fell off the bus without one) are not counted
    assert parse_kernel_events(fixture("dmesg_nvrm_fallen_off_bus_no_xid.txt"), XID_MARKER) == []
    unstamped = parse_kernel_events("NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.\n", XID_MARKER)
    assert unstamped[0].at_s is None and newer_than(unstamped, None, 0) == unstamped
    assert newer_than(unstamped, None, 1) == []


def test_what_each_tool_can_tell_the_health_gates() -> None:
    nvidia = health_queries("nvidia-smi")
    assert nvidia.processes and nvidia.errors and nvidia.kernel_marker
    for key in ("ixsmi", "ixsmi-csv", "xpu_smi", "xpu_smi-m"):
        queries = health_queries(key)
        assert queries.processes is not None and queries.errors is None and queries.kernel_marker is None
    assert health_queries("npu-smi").processes is None


# --------------------------------------------------------------------------- the host


def test_proc_parsers_on_this_machine() -> None:
    transport = LocalTransport()
    first = transport.run(["cat", "/proc/stat", "/proc/meminfo"], timeout=10).check().output
    used, total = parse_meminfo(first)
    assert total == pytest.approx(psutil.virtual_memory().total / 1024**3, rel=0.001)
    assert 0 < used < total
    times = parse_proc_stat(first)
    busy = 0
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # some CPU work between the two reads
        busy += 1
    later = parse_proc_stat(transport.run(["cat", "/proc/stat"], timeout=10).output)
    assert later.total > times.total
    percent = cpu_percent_between(times, later)
    assert percent is not None and 0.0 <= percent <= 100.0
    with pytest.raises(ValueError):
        parse_proc_stat("intr 1234\n")
    with pytest.raises(ValueError):
        parse_meminfo("MemFree: 1 kB\n")


def test_local_host_sample() -> None:
    sample = sample_local_host()
    assert sample.mem_total_gib is not None and sample.mem_total_gib > 0
    assert sample.cpu_pct is not None and 0 <= sample.cpu_pct <= 100


def test_ipmitool_power() -> None:
    assert parse_ipmitool_power(fixture("ipmitool_dcmi_power_activated.txt")) == 215
    assert parse_ipmitool_power(fixture("ipmitool_dcmi_power_activated_2.txt")) == 197
    assert parse_ipmitool_power(fixture("ipmitool_dcmi_power_deactivated_360.txt")) == 360
    assert parse_ipmitool_power(fixture("ipmitool_dcmi_power_deactivated_zero.txt")) is None
    assert parse_ipmitool_power("Could not open device at /dev/ipmi0") is None


# --------------------------------------------------------------------------- the sampler


class ReplayTransport(Transport):
    """Answers each argv with recorded output, in turn; 127 for anything else."""

    def __init__(self, outputs: dict[tuple[str, ...], list[str]], host: str = "node1") -> None:
        self.host = host
        self.outputs = {argv: list(texts) for argv, texts in outputs.items()}
        self.calls: list[list[str]] = []

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        self.calls.append(argv)
        texts = self.outputs.get(tuple(argv))
        if not texts:
            return CommandResult(self.host, argv, 127, f"{argv[0]}: not found")
        text = texts.pop(0) if len(texts) > 1 else texts[0]
        return CommandResult(self.host, argv, 0, text)

    def put_tree(self, local: Path, remote: str) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    def get_tree(self, remote: str, local: Path) -> FetchedFiles:  # pragma: no cover - not used
        raise NotImplementedError


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_sampler_device_rows_and_peak(tmp_path: Path) -> None:
    low = fixture("ixsmi_table_bi-v100_corex-3.0.1.txt")
    high = low.replace("| 0%   31C   P0    56W / 250W   | 513MiB / 32768MiB", "| 0%   31C   P0    56W / 250W   | 21504MiB / 32768MiB")
    transport = ReplayTransport({("ixsmi",): [low, high, low]})
    path = tmp_path / "node1.csv"
    sampler = MonitorSampler(transport, "ixsmi", path, host_stats="none", clock=lambda: 1700000000.5)
    for _ in range(3):
        sampler.sample_once()
    sampler.stop()
    rows = read_csv(path)
    assert list(rows[0].keys()) == list(CSV_COLUMNS)
    assert len(rows) == 3 * 7 and {row["kind"] for row in rows} == {"device"}
    assert rows[0]["timestamp_ms"] == "1700000000500" and rows[0]["host"] == "node1"
    assert rows[0]["mem_used_mib"] == "513" and rows[0]["power_w"] == "54"
    assert peak_memory(path) == (21504 / 1024, 32.0)  # 21.0/32.0
    assert peak_memory(path, device_indices=[0]) == (513 / 1024, 32.0)
    assert len(read_device_rows(path)) == 21
    assert peak_memory(tmp_path / "missing.csv") is None


def test_sampler_host_rows_from_proc_on_this_machine(tmp_path: Path) -> None:
    path = tmp_path / "local.csv"
    sampler = MonitorSampler(LocalTransport(), None, path, host_stats="proc", system_power=False)
    sampler.sample_once()
    time.sleep(0.2)  # /proc/stat counts in clock ticks: let some pass
    sampler.sample_once()
    sampler.stop()
    rows = read_csv(path)
    assert [row["kind"] for row in rows] == ["host", "host"]
    assert rows[0]["cpu_pct"] == ""  # the first /proc/stat read has nothing to compare with
    assert 0.0 <= float(rows[1]["cpu_pct"]) <= 100.0
    assert float(rows[1]["mem_total_gib"]) == pytest.approx(psutil.virtual_memory().total / 1024**3, rel=0.001)
    assert peak_memory(path) is None  # no device rows


def test_sampler_survives_a_missing_tool_and_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "local.csv"
    caplog.set_level(logging.WARNING, logger="harness.devices.sampler")
    with MonitorSampler(LocalTransport(), "xpu_smi", path, interval_s=0.02, system_power=True) as sampler:
        deadline = time.monotonic() + 5
        while sampler.samples_taken < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert sampler.samples_taken >= 4
    assert sampler.failures["xpu_smi"] >= 4
    assert "not found" in sampler.last_errors["xpu_smi"] or "No such file" in sampler.last_errors["xpu_smi"]
    warnings = [record for record in caplog.records if "xpu_smi monitor failed" in record.getMessage()]
    assert len(warnings) == 1
    rows = read_csv(path)
    assert rows and {row["kind"] for row in rows} == {"host"}
    assert all(row["mem_total_gib"] for row in rows)


def test_sampler_keeps_going_when_the_transport_raises(tmp_path: Path) -> None:
    class BrokenTransport(ReplayTransport):
        def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
            raise ConnectionResetError("ssh session dropped")

    sampler = MonitorSampler(BrokenTransport({}), "nvidia-smi", tmp_path / "x.csv", host_stats="proc")
    assert sampler.sample_once() == []
    assert sampler.sample_once() == []
    sampler.stop()
    assert sampler.failures == {"nvidia-smi": 2, "proc": 2}
    assert "ssh session dropped" in sampler.last_errors["proc"]


def test_sampler_system_power_row(tmp_path: Path) -> None:
    transport = ReplayTransport(
        {
            ("xpu_smi", "-m"): [fixture("xpu_smi_m_p800.txt")],
            ("ipmitool", "dcmi", "power", "reading"): [fixture("ipmitool_dcmi_power_activated.txt")],
        }
    )
    path = tmp_path / "p800.csv"
    sampler = MonitorSampler(transport, "xpu_smi-m", path, host_stats="none", system_power=True)
    rows = sampler.sample_once()
    sampler.stop()
    assert [row.kind for row in rows] == ["device", "device", "host"]
    assert rows[-1].system_power_w == 215
    assert read_csv(path)[-1]["system_power_w"] == "215"
    used, total = peak_memory(path)  # type: ignore[misc]
    assert (round(used, 1), total) == (88.3, 96.0)


def test_system_power_is_sampled_when_ipmitool_answers_and_dropped_quietly_when_absent(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reading = (FIXTURES / "ipmitool_dcmi_power_activated.txt").read_text()
    with_bmc = ReplayTransport({tuple(IPMI_POWER_ARGV): [reading]})
    sampler = MonitorSampler(with_bmc, None, tmp_path / "bmc.csv", host_stats="none", system_power=True)
    sampler.sample_once()
    sampler.sample_once()
    sampler.stop()
    assert [float(row["system_power_w"]) for row in read_csv(tmp_path / "bmc.csv")] == \
        [parse_ipmitool_power(reading)] * 2

    caplog.set_level(logging.WARNING, logger="harness.devices.sampler")
    without = ReplayTransport({})  # every command: 127, not found
    sampler = MonitorSampler(without, None, tmp_path / "none.csv", host_stats="none", system_power=True)
    sampler.sample_once()
    sampler.sample_once()
    sampler.stop()
    assert sampler.system_power is False and "ipmitool" in sampler.last_errors
    assert [call for call in without.calls if call[0] == "ipmitool"] == [list(IPMI_POWER_ARGV)]  # tried once
    assert not [r for r in caplog.records if "ipmitool" in r.getMessage()]
