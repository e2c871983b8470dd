"""A device's conditions over the training window (harness/devices/conditions.py):
the SM clock and throttle reasons nvidia-smi reports (recorded outputs in
tests/fixtures/smi, see its README), their way through monitor.csv, and the
one line a straggler's ``why`` quotes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from test_monitor import ReplayTransport, fixture, read_csv

from harness.devices.conditions import DeviceConditions, ThrottleShare, device_conditions, read_monitor
from harness.devices.host import HostSample
from harness.devices.nvidia_smi import NVIDIA_SMI_ARGV, parse_nvidia_smi_csv, parse_throttle_mask, throttle_reasons
from harness.devices.readings import DeviceSample
from harness.devices.sampler import CSV_COLUMNS, MonitorRow, MonitorSampler, peak_memory
from harness.devices.xpu_smi import parse_xpu_smi_machine, parse_xpu_smi_table

# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(("name", "expected"), [
    # driver 590.48.01 under gpu-burn: the header says clocks_event_reasons.active and clocks.current.sm,
    # power.draw comes before power.draw.instant (625.68), no reason active
    ("nvidia-smi_query_gpu_h100_load_590.48.01.txt",
     DeviceSample(index=0, mem_used_mib=19818, mem_total_mib=81559, util_pct=100, power_w=631.95, temp_c=59,
                  clock_mhz=1980, throttle_mask=0x0)),
    # driver 595.71.05, idle: SW power cap active
    ("nvidia-smi_query_gpu_rtx2080super_idle_595.71.05.txt",
     DeviceSample(index=0, mem_used_mib=214, mem_total_mib=8192, util_pct=0, power_w=39.32, temp_c=40,
                  clock_mhz=765, throttle_mask=0x4)),
    # driver 465.27: the old name clocks_throttle_reasons.active, GPU idle
    ("nvidia-smi_query_gpu_rtx2080super_idle_465.27.txt",
     DeviceSample(index=0, mem_used_mib=344, mem_total_mib=7979, util_pct=0, power_w=30.37, temp_c=32,
                  clock_mhz=300, throttle_mask=0x1)),
])
def test_nvidia_csv_clock_and_throttle_mask_among_200_columns(name: str, expected: DeviceSample) -> None:
    # the header names mixed-case fields (encoder.stats.sessionCount) and is still read as the header
    assert parse_nvidia_smi_csv(fixture(name)) == [expected]


def test_throttle_mask_cells_and_names() -> None:
    assert parse_throttle_mask("0x0000000000000004") == 4
    assert parse_throttle_mask(" 0x0000000000000048 ") == 0x48
    for cell in ("[N/A]", "[Not Supported]", "Not Active", "", "4"):
        assert parse_throttle_mask(cell) is None
    assert throttle_reasons(0x4) == ["sw_power_cap"]
    assert throttle_reasons(0x48) == ["hw_slowdown", "hw_thermal"]
    assert throttle_reasons(0x10 | 0x20 | 0x80 | 0x100) == ["sync_boost", "sw_thermal", "power_brake", "display_clocks"]
    assert throttle_reasons(0x0) == []
    assert throttle_reasons(0x1 | 0x2) == []  # GPU idle and applications clocks are not throttles
    assert throttle_reasons(0x1FF) == ["sw_power_cap", "hw_slowdown", "sync_boost", "sw_thermal", "hw_thermal",
                                       "power_brake", "display_clocks"]
    assert throttle_reasons(0x204) == ["sw_power_cap", "reason_0x200"]  # a bit newer than the table


def test_xpu_smi_clock_only_where_the_table_has_a_frequency_column() -> None:
    assert {s.clock_mhz for s in parse_xpu_smi_table(fixture("xpu_smi_table_k200_driver-4.0.txt"))} == {900}
    assert {s.clock_mhz for s in parse_xpu_smi_table(fixture("xpu_smi_table_r300_runtime-4.31.txt"))} == {None}
    assert {s.clock_mhz for s in parse_xpu_smi_machine(fixture("xpu_smi_m_p800.txt"))} == {None}


# --------------------------------------------------------------------------- monitor.csv


def test_sampler_writes_clock_and_mask_and_read_monitor_gives_them_back(tmp_path: Path) -> None:
    outputs = [fixture("nvidia-smi_query_gpu_h100_load_590.48.01.txt"),
               fixture("nvidia-smi_query_gpu_rtx2080super_idle_595.71.05.txt")]
    ticks = iter([1700000000.0, 1700000002.0])
    path = tmp_path / "monitor.csv"
    sampler = MonitorSampler(ReplayTransport({NVIDIA_SMI_ARGV: outputs}), "nvidia-smi", path, host_stats="none",
                             clock=lambda: next(ticks))
    written = sampler.sample_once() + sampler.sample_once()
    sampler.stop()
    cells = read_csv(path)
    assert list(cells[0]) == list(CSV_COLUMNS)
    assert [(row["clock_mhz"], row["throttle"]) for row in cells] == [("1980", "0x0"), ("765", "0x4")]
    assert read_monitor(path) == written
    assert [row.device.throttle_mask for row in written if row.device] == [0, 4]


def test_an_old_monitor_csv_without_the_new_columns_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "monitor.csv"
    path.write_text("timestamp_ms,host,kind,device_index,mem_used_mib,mem_total_mib,util_pct,power_w,"
                    "temp_c,cpu_pct,mem_used_gib,mem_total_gib,system_power_w\n"
                    "1000,node1,device,0,513,32768,0,54,31,,,,\n"
                    "1000,node1,host,,,,,,,50,3.5,24,\n"
                    "2000,node1,host,,,,,,,,,,215\n"
                    "2000,node1,dev")  # the line a killed sampler left half written
    rows = read_monitor(path)
    assert rows == [
        MonitorRow(1000, "node1", device=DeviceSample(index=0, mem_used_mib=513, mem_total_mib=32768, util_pct=0,
                                                      power_w=54, temp_c=31)),
        MonitorRow(1000, "node1", host_sample=HostSample(cpu_pct=50, mem_used_gib=3.5, mem_total_gib=24)),
        MonitorRow(2000, "node1", system_power_w=215),
    ]
    assert peak_memory(path) == (513 / 1024, 32.0)
    conditions = device_conditions(path, 0, 0, 5000, "nvidia-smi")
    assert conditions.throttle_told is False
    assert conditions.describe() == "54 W, 31 C, throttle reasons: none recorded in these samples"


# --------------------------------------------------------------------------- conditions over a window


def write_monitor(path: Path, rows: list[MonitorRow]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(row.csv_cells() for row in rows)


def gpu(index: int, clock: float, power: float, temp: float, mask: int | None) -> DeviceSample:
    return DeviceSample(index=index, util_pct=99, power_w=power, temp_c=temp, clock_mhz=clock, throttle_mask=mask)


def test_device_conditions_over_the_training_window(tmp_path: Path) -> None:
    path = tmp_path / "monitor.csv"
    inside = [(1410, 298, 83, 0x40), (1395, 300, 84, 0x48), (1410, 297, 83, 0x40), (1500, 290, 80, 0x0),
              (1530, 310, 79, 0x1)]
    rows = [MonitorRow(10_000, "n1", device=gpu(0, 300, 60, 40, 0x1))]  # before the window: idle
    for step, (clock, power, temp, mask) in enumerate(inside):
        at = 20_000 + 2_000 * step
        rows.append(MonitorRow(at, "n1", device=gpu(0, clock, power, temp, mask)))
        rows.append(MonitorRow(at, "n1", device=gpu(1, 1980, 400, 60, 0x4)))  # another device
        rows.append(MonitorRow(at, "n1", host_sample=HostSample(cpu_pct=40, mem_used_gib=10, mem_total_gib=64)))
    rows.append(MonitorRow(40_000, "n1", device=gpu(0, 2000, 700, 95, 0x80)))  # after it
    write_monitor(path, rows)

    conditions = device_conditions(path, 0, 20_000, 28_000, "nvidia-smi")
    assert (conditions.samples, conditions.clock_mhz_median, conditions.power_w_median, conditions.temp_c_median,
            conditions.util_pct_median) == (5, 1410, 298, 83, 99)
    assert conditions.throttle_reasons == (ThrottleShare(name="hw_thermal", share=0.6),
                                           ThrottleShare(name="hw_slowdown", share=0.2))
    assert conditions.describe() == \
        "clock 1410 MHz, 298 W, 83 C, throttled: hw_thermal (60% of samples), hw_slowdown (20% of samples)"
    assert DeviceConditions.model_validate_json(conditions.model_dump_json()) == conditions

    quiet = device_conditions(path, 1, 20_000, 28_000, "nvidia-smi")
    assert quiet.describe() == "clock 1980 MHz, 400 W, 60 C, throttled: sw_power_cap (100% of samples)"
    unthrottled = device_conditions(path, 0, 26_000, 28_000, "nvidia-smi")  # 0x0 and gpu_idle only
    assert unthrottled.describe() == "clock 1515 MHz, 300 W, 80 C, no throttle reported"

    empty = device_conditions(path, 0, 50_000, 60_000, "nvidia-smi")
    assert (empty.samples, empty.clock_mhz_median, empty.notes) == (0, None, ("no samples in the training window",))
    assert empty.describe() == "no samples in the training window"
    missing = device_conditions(tmp_path / "absent.csv", 0, 0, 1, "nvidia-smi")
    assert missing.describe() == "no monitor file for this node"


def test_a_vendor_without_a_device_tool_gets_its_host_cpu(tmp_path: Path) -> None:
    path = tmp_path / "monitor.csv"
    cpu = [None, 95.0, 97.0, 99.0, 12.0]  # the first /proc read has nothing to compare with; the last is outside
    write_monitor(path, [MonitorRow(1_000 * (k + 1), "cpu1", host_sample=HostSample(pct, 3.0, 24.0))
                         for k, pct in enumerate(cpu)])
    conditions = device_conditions(path, 0, 1_000, 4_000, None)
    assert (conditions.samples, conditions.host_cpu_pct_median, conditions.device_index) == (4, 97, None)
    assert conditions.describe() == "no device monitor for this vendor; host cpu 97%"
    assert device_conditions(path, 0, 9_000, 9_500, None).describe() == \
        "no device monitor for this vendor; no samples in the training window"


@pytest.mark.parametrize(("key", "program"), [("ixsmi", "ixsmi"), ("ixsmi-csv", "ixsmi"), ("npu-smi", "npu-smi")])
def test_tools_that_cannot_tell_throttle_reasons_say_so(tmp_path: Path, key: str, program: str) -> None:
    transport = ReplayTransport({("ixsmi",): [fixture("ixsmi_table_bi-v100_corex-3.0.1.txt")]})
    path = tmp_path / "monitor.csv"
    sampler = MonitorSampler(transport, "ixsmi", path, host_stats="none", clock=lambda: 1700000000.0)
    sampler.sample_once()
    sampler.stop()
    assert {row["throttle"] for row in read_csv(path)} == {""}
    conditions = device_conditions(path, 0, 1700000000000, 1700000000000, key)
    assert conditions.throttle_told is False and conditions.throttle_reasons == ()
    assert conditions.describe() == f"clock 1500 MHz, 54 W, 31 C, throttle reasons: not reported by {program}"
    assert device_conditions(path, 0, 0, 1, key).describe() == \
        f"no samples in the training window; throttle reasons: not reported by {program}"
