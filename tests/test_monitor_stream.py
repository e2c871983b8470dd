"""The monitor of a remote host as one long-lived command (harness/devices/monitor_stream.py):
the real loop in a real sh, its probes stand-in tools that print recorded outputs of the
real ones (tests/fixtures/smi) and log each call with its session: the local stream starts the
loop's shell as a session leader, so the session id is that shell's pid."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from test_hang import wait_until

from harness.backends.transport import CommandResult, LocalTransport
from harness.devices.ipmitool import parse_ipmitool_power
from harness.devices.monitor_stream import RoundParser, monitor_argv
from harness.devices.sampler import MonitorSampler, read_monitor

FIXTURES = Path(__file__).parent / "fixtures" / "smi"


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], Path]:
    """tools(name, body) puts an executable `name` first on PATH; every call appends its
    session id (the loop's pid) to calls_<name>.log."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def tool(name: str, body: str) -> Path:
        calls = tmp_path / f"calls_{name}.log"
        script = folder / name
        script.write_text(f"#!/bin/sh\nps -o sid= -p $$ >> {calls}\n{body}\n")
        script.chmod(0o755)
        return calls

    return tool


def calls_of(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def streamed(path: Path, smi: str | None, **options: object) -> MonitorSampler:
    return MonitorSampler(LocalTransport("node1"), smi, path, streamed=True, host_stats="proc", **options)  # type: ignore[arg-type]


def test_one_command_runs_every_round_and_ipmitool_every_nth(tmp_path: Path, tools: Callable[[str, str], Path]) -> None:
    smi_calls = tools("nvidia-smi", f"cat {FIXTURES / 'nvidia-smi_query_gpu_h100_load_590.48.01.txt'}")
    reading = FIXTURES / "ipmitool_dcmi_power_activated.txt"
    bmc_calls = tools("ipmitool", f"cat {reading}")
    path = tmp_path / "monitor.csv"
    with streamed(path, "nvidia-smi", interval_s=0.05, system_power=True, system_power_every=3) as sampler:
        wait_until("7 rounds", lambda: sampler.samples_taken >= 7)
    rows = read_monitor(path)
    host_rows = [row for row in rows if row.kind == "host"]
    assert len(host_rows) >= 7 and not sampler.failures
    # one shell ran every probe: one command, not one per probe per round
    assert len(set(calls_of(smi_calls) + calls_of(bmc_calls))) == 1
    assert len(calls_of(smi_calls)) >= len(host_rows)
    assert [row.system_power_w for row in host_rows[:7]] == [parse_ipmitool_power(reading.read_text()), None, None] * 2 + [215]
    assert all(row.host_sample and row.host_sample.mem_total_gib for row in host_rows)
    assert all(row.host_sample and row.host_sample.cpu_pct is not None for row in host_rows[1:])
    devices = [row.device for row in rows if row.device is not None]
    assert {d.index for d in devices} == {0} and {d.clock_mhz for d in devices} == {1980.0}
    assert [row.timestamp_ms for row in host_rows] == sorted(row.timestamp_ms for row in host_rows)


def test_no_bmc_is_asked_once_and_quietly_dropped(tmp_path: Path, tools: Callable[[str, str], Path],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="harness.devices.sampler")
    bmc_calls = tools("ipmitool", "echo 'Could not open device at /dev/ipmi0 or /dev/ipmi/0 or /dev/ipmidev/0'; exit 1")
    with streamed(tmp_path / "monitor.csv", None, interval_s=0.05, system_power=True, system_power_every=2) as sampler:
        wait_until("5 rounds", lambda: sampler.samples_taken >= 5)
    assert len(calls_of(bmc_calls)) == 1
    assert sampler.system_power is False and "Could not open device" in sampler.last_errors["ipmitool"]
    assert not sampler.failures and not caplog.records


def test_a_hung_tool_times_out_and_the_rounds_go_on(tmp_path: Path, tools: Callable[[str, str], Path],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="harness.devices.sampler")
    tools("ixsmi", "sleep 30")
    with streamed(tmp_path / "monitor.csv", "ixsmi", interval_s=0.05, timeout_s=1) as sampler:
        wait_until("2 rounds", lambda: sampler.samples_taken >= 2)
    assert sampler.failures["ixsmi"] >= 2 and "timed out" in sampler.last_errors["ixsmi"]
    assert [r.getMessage() for r in caplog.records if "ixsmi monitor failed" in r.getMessage()] == \
        ["node1: ixsmi monitor failed, will keep sampling: `ixsmi` timed out: "]
    assert {row.kind for row in read_monitor(tmp_path / "monitor.csv")} == {"host"}


def test_a_killed_loop_is_started_again_and_stop_leaves_no_process(tmp_path: Path,
                                                                   tools: Callable[[str, str], Path]) -> None:
    smi_calls = tools("nvidia-smi", f"cat {FIXTURES / 'nvidia-smi_query_gpu_h100_load_590.48.01.txt'}")
    sampler = streamed(tmp_path / "monitor.csv", "nvidia-smi", interval_s=0.05).start()
    try:
        wait_until("a round", lambda: sampler.samples_taken >= 1)
        first = calls_of(smi_calls)[0]
        os.kill(first, signal.SIGKILL)
        wait_until("a second shell", lambda: len(set(calls_of(smi_calls))) == 2)
        taken = sampler.samples_taken
        wait_until("rounds from it", lambda: sampler.samples_taken >= taken + 2)
    finally:
        sampler.stop()
    second = calls_of(smi_calls)[-1]
    assert second != first

    def gone() -> bool:
        try:
            os.kill(second, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{second}/stat").read_text().split(") ")[1].startswith("Z")

    wait_until(f"loop {second} ended", gone)


def test_rounds_are_framed_and_a_cut_round_is_dropped() -> None:
    probes = {"proc": ("cat", "/proc/stat"), "ixsmi": ("ixsmi",)}
    heard: list[tuple[int, dict[str, CommandResult]]] = []
    ticks = iter([100.0, 101.0, 102.5])
    parser = RoundParser("n1", probes, lambda stamp, answers: heard.append((stamp, answers)), lambda: next(ticks))
    lines = ["Welcome to node1", "@monitor end",  # a banner, an end without a round
             "@monitor round", "@monitor probe proc", "cpu  1 2 3", "",  # cut short: the stream dropped
             "@monitor round", "@monitor probe proc", "cpu  4 5 6", "@monitor exit 0",
             "@monitor probe ixsmi", "partial", "@monitor exit 124", "@monitor end",
             "@monitor round", "@monitor probe ixsmi", "@monitor exit 127", "@monitor end"]
    for line in lines:
        parser.feed(line)
    assert [stamp for stamp, _ in heard] == [101000, 102500]
    first = heard[0][1]
    assert first["proc"] == CommandResult("n1", ["cat", "/proc/stat"], 0, "cpu  4 5 6\n")
    assert first["ixsmi"].timed_out and first["ixsmi"].output == "partial\n"
    assert heard[1][1] == {"ixsmi": CommandResult("n1", ["ixsmi"], 127, "")}


def test_the_loop_is_one_sh_command_with_quoted_probes() -> None:
    argv = monitor_argv({"nvidia-smi": ("nvidia-smi", "--format=csv,noheader"), "ipmitool": ("ipmitool", "x y")},
                        interval_s=1.0, timeout_s=10.0, every_nth={"ipmitool": 5})
    assert argv[:2] == ["sh", "-c"] and argv[3] == "monitor"
    script = argv[2]
    assert "$t nvidia-smi --format=csv,noheader 2>&1" in script and "$t ipmitool 'x y' 2>&1" in script
    assert "$((n % 5))" in script and 'timeout 10"' in script and "sleep 1 &" in script
