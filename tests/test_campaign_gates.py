"""The campaign's health gates without hosts: a transport answers each command
with recorded tool output (tests/fixtures/smi, see its README) or, for the
counters that must change between two checks, with lines in the format of the
gate's own query. Foreign processes, ECC counters and XID lines since the last
check, what is remembered in the campaign state, and the once-only notices."""

from __future__ import annotations

from pathlib import Path

from harness.backends.transport import CommandResult, FetchedFiles, Transport
from harness.campaign.gates import GateMemory, check_gates
from harness.campaign.state import CampaignState, HostHealth, StateStore, new_folder
from harness.campaign.suite import Gates
from harness.core.inventory import Host
from harness.devices.kernel_log import BOOT_ID_ARGV, DMESG_ARGV
from harness.devices.nvidia_smi import NVIDIA_SMI_ECC_ARGV, NVIDIA_SMI_INVENTORY_ARGV, NVIDIA_SMI_PROCESSES_ARGV

FIXTURES = Path(__file__).parent / "fixtures" / "smi"
HOST = Host(name="node1", address="10.0.0.1", devices=8)
NO_LEFTOVER_CHECK = Gates(leftovers=False)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def ecc_lines(uncorrected_volatile: dict[int, int] | None = None, uncorrected_aggregate: dict[int, int] | None = None) -> str:
    """``index, uncorrected volatile, uncorrected aggregate, corrected volatile, corrected aggregate``
    per device, as NVIDIA_SMI_ECC_ARGV asks (noheader, nounits)."""
    volatile, aggregate = uncorrected_volatile or {}, uncorrected_aggregate or {}
    return "".join(f"{i}, {volatile.get(i, 0)}, {aggregate.get(i, 0)}, 0, 7\n" for i in range(8))


class ToolTransport(Transport):
    """Answers by argv; an argv it has no answer for exits 127 (not found)."""

    def __init__(self, answers: dict[tuple[str, ...], str | tuple[int, str]]) -> None:
        self.host = "node1"
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        self.calls.append(tuple(argv))
        answer = self.answers.get(tuple(argv), (127, f"{argv[0]}: not found"))
        code, output = answer if isinstance(answer, tuple) else (0, answer)
        return CommandResult(self.host, argv, code, output)

    def put_tree(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def get_tree(self, remote: str, local: Path) -> FetchedFiles:
        raise NotImplementedError


def nvidia_host(processes: str = "", ecc: str | None = None, dmesg: str | tuple[int, str] = "",
                boot: str = "3f1c5e2a-boot-1\n") -> ToolTransport:
    return ToolTransport({
        NVIDIA_SMI_INVENTORY_ARGV: "NVIDIA A100-SXM4-40GB, 40960 MiB, 470.57.02\n" * 8,
        NVIDIA_SMI_PROCESSES_ARGV: processes,
        NVIDIA_SMI_ECC_ARGV: ecc if ecc is not None else ecc_lines(),
        BOOT_ID_ARGV: boot,
        DMESG_ARGV: dmesg,
    })


def gate(transport: Transport, memory: GateMemory, smi: str = "nvidia-smi") -> list[str]:
    found = check_gates(None, lambda host: transport, [HOST], smi, NO_LEFTOVER_CHECK, memory)  # type: ignore[arg-type]
    return [problem.text for problem in found]


def test_a_foreign_process_fails_the_gate_naming_host_pid_name_and_memory() -> None:
    problems = gate(nvidia_host(processes=fixture("nvidia-smi_compute_apps_header_units_l40s.txt")), GateMemory())
    assert problems == [
        "node1: foreign process on the devices: pid 44378 (tritonserver, 1836 MiB)",
        "node1: foreign process on the devices: pid 44966 (/opt/tritonserver/backends/python/triton_python_backend_stub,"
        " 974 MiB)",
        "node1: foreign process on the devices: pid 52114 (/usr/bin/python3, 6294 MiB)",
    ]


def test_clean_devices_pass_and_the_reading_is_remembered() -> None:
    memory = GateMemory()
    assert gate(nvidia_host(processes=fixture("nvidia-smi_compute_apps_header_only.txt"),
                            ecc=fixture("nvidia-smi_query_ecc_8xh100.txt")), memory) == []
    health = memory.health["node1"]
    assert health.errors["7"] == {"uncorrected_volatile": 0, "uncorrected_aggregate": 0, "corrected_volatile": 0,
                                  "corrected_aggregate": 0}
    assert (health.boot_id, health.kernel_events, health.last_event_s) == ("3f1c5e2a-boot-1", 0, None)


def test_an_uncorrected_ecc_counter_that_rose_since_the_last_check_fails_once() -> None:
    warnings: list[str] = []
    memory = GateMemory(warn=warnings.append)
    assert gate(nvidia_host(ecc=ecc_lines()), memory) == []
    assert gate(nvidia_host(ecc=ecc_lines()), memory) == []  # unchanged: nothing
    (problem,) = gate(nvidia_host(ecc=ecc_lines({2: 2}, {2: 2})), memory)
    assert problem.startswith("node1: device 2: uncorrected ECC errors (since the driver was loaded) 0 -> 2 since the "
                              "last check (")
    assert "uncorrected ECC errors (lifetime) 0 -> 2" in problem
    assert gate(nvidia_host(ecc=ecc_lines({2: 2}, {2: 2})), memory) == []  # remembered: a retry runs
    assert gate(nvidia_host(ecc=ecc_lines({}, {2: 2})), memory) == []  # volatile reset by a driver reload
    assert warnings == []


def test_the_first_check_fails_only_on_uncorrected_errors_since_the_driver_loaded() -> None:
    memory = GateMemory()
    (problem,) = gate(nvidia_host(ecc=ecc_lines({5: 1}, {3: 40, 5: 1})), memory)
    assert problem == "node1: device 5: 1 uncorrected ECC error(s) since the driver was loaded, not cleared by a reset"
    assert memory.health["node1"].errors["3"]["uncorrected_aggregate"] == 40  # history: the baseline, not a failure


def test_xid_lines_since_the_last_check_fail_and_the_ones_before_the_first_are_only_told() -> None:
    warnings: list[str] = []
    memory = GateMemory(warn=warnings.append)
    three = fixture("dmesg_nvrm_xid_3lines.txt")
    assert gate(nvidia_host(dmesg=three), memory) == []
    assert len(warnings) == 1 and "3 driver error line(s) (XID) in the kernel log before this campaign's first" \
        in warnings[0] and "Xid (PCI:0000:01:00): 31" in warnings[0]
    assert gate(nvidia_host(dmesg=three), memory) == []  # nothing new
    later = three + "[24990.100000] NVRM: Xid (PCI:0000:01:00): 79, pid=1234, name=python3, GPU has fallen off the bus.\n"
    (problem,) = gate(nvidia_host(dmesg=later), memory)
    assert problem.startswith("node1: 1 new driver error line(s) (XID) in the kernel log since the last check (")
    assert problem.endswith("the last: NVRM: Xid (PCI:0000:01:00): 79, pid=1234, name=python3, GPU has fallen off the bus.")
    (rebooted,) = gate(nvidia_host(dmesg=three, boot="3f1c5e2a-boot-2\n"), memory)
    assert "3 new driver error line(s) (XID) in the kernel log since the host rebooted" in rebooted
    assert gate(nvidia_host(dmesg=fixture("dmesg_nvrm_fallen_off_bus_no_xid.txt"), boot="3f1c5e2a-boot-3\n"),
                memory) == []  # NVRM lines that are no XID


def test_an_unreadable_kernel_log_skips_the_xid_check_there_saying_so_once() -> None:
    warnings: list[str] = []
    memory = GateMemory(warn=warnings.append)
    denied = (1, "dmesg: read kernel buffer failed: Operation not permitted\n")
    assert gate(nvidia_host(dmesg=denied), memory) == []
    assert gate(nvidia_host(dmesg=denied), memory) == []
    assert warnings == ["node1: `dmesg` exited 1 while reading the kernel log: dmesg: read kernel buffer failed: "
                        "Operation not permitted; the XID check is skipped there"]


def test_a_tool_that_cannot_tell_skips_those_gates_and_says_so_once() -> None:
    warnings: list[str] = []
    memory = GateMemory(warn=warnings.append)
    table = fixture("ixsmi_table_bi-v150_corex-4.3.0.txt")  # 16 devices, no process
    transport = ToolTransport({("ixsmi",): table,
                               ("ixsmi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"):
                                   "Iluvatar BI-V150, 32768 MiB, 4.3.0\n" * 8})
    assert gate(transport, memory, "ixsmi") == []
    assert gate(transport, memory, "ixsmi") == []
    assert warnings == ["health gates: ixsmi cannot report ECC errors, driver errors (XID); that gate is skipped for "
                        "jobs whose vendor's tool is ixsmi"]
    assert ("dmesg",) not in transport.calls and "node1" not in memory.health


def test_a_failing_tool_is_one_problem_not_one_per_gate() -> None:
    broken = ToolTransport({NVIDIA_SMI_INVENTORY_ARGV: (9, "NVIDIA-SMI has failed because it couldn't communicate "
                                                           "with the NVIDIA driver.")})
    (problem,) = gate(broken, GateMemory())
    assert problem.startswith("node1: `nvidia-smi` exited 9 while counting the devices: NVIDIA-SMI has failed")
    assert broken.calls == [NVIDIA_SMI_INVENTORY_ARGV]


def test_the_readings_live_in_the_campaign_state(tmp_path: Path) -> None:
    folder = new_folder(tmp_path, "nightly")
    state = CampaignState(name="nightly", stamp=folder.name, suite="s", inventory="h", units=[])
    memory = GateMemory(state.health)
    gate(nvidia_host(ecc=ecc_lines(), dmesg=fixture("dmesg_nvrm_xid_3lines.txt")), memory)
    StateStore(folder).save(state)
    loaded = StateStore(folder).load()
    assert loaded.health["node1"] == state.health["node1"]
    assert isinstance(loaded.health["node1"], HostHealth) and loaded.health["node1"].kernel_events == 3
    # a state written before the gates remembered anything still loads
    (folder / "state.json").write_text(loaded.model_dump_json(exclude={"health"}))
    assert StateStore(folder).load().health == {}


def codes(transport: Transport, memory: GateMemory, run_id: str = "n-a1") -> list[tuple[str, str, str]]:
    found = check_gates(None, lambda host: transport, [HOST], "nvidia-smi", NO_LEFTOVER_CHECK, memory,  # type: ignore[arg-type]
                        run_id=run_id)
    return [(p.fault.host, p.fault.code, p.fault.run_id) if p.fault else ("", "", "") for p in found]


def test_each_failing_gate_gives_the_hosts_fault_code_and_the_line_keeps_its_text() -> None:
    processes = fixture("nvidia-smi_compute_apps_header_units_l40s.txt")
    assert codes(nvidia_host(processes=processes), GateMemory()) == [("node1", "BENCH-G02", "n-a1")] * 3
    (problem,) = check_gates(None, lambda host: nvidia_host(ecc=ecc_lines({5: 1})), [HOST], "nvidia-smi",  # type: ignore[arg-type]
                             NO_LEFTOVER_CHECK, GateMemory())
    assert problem.fault is not None and problem.fault.code == "BENCH-G03" and problem.fault.severe
    assert problem.text == f"node1: {problem.fault.evidence}"
    seven = nvidia_host()
    seven.answers[NVIDIA_SMI_INVENTORY_ARGV] = "NVIDIA A100-SXM4-40GB, 40960 MiB, 470.57.02\n" * 7
    assert codes(seven, GateMemory()) == [("node1", "BENCH-G01", "n-a1")]
    broken = ToolTransport({NVIDIA_SMI_INVENTORY_ARGV: (9, "NVIDIA-SMI has failed")})
    assert codes(broken, GateMemory()) == [("node1", "BENCH-G06", "n-a1")]


def test_a_new_xid_that_needs_a_reset_is_g04_and_any_other_g05() -> None:
    three = fixture("dmesg_nvrm_xid_3lines.txt")
    for xid, code in ((79, "BENCH-G04"), (13, "BENCH-G05")):
        memory = GateMemory()
        assert codes(nvidia_host(dmesg=three), memory) == []
        later = three + f"[24990.100000] NVRM: Xid (PCI:0000:01:00): {xid}, pid=1234, name=python3, text.\n"
        assert codes(nvidia_host(dmesg=later), memory) == [("node1", code, "n-a1")]


def test_a_host_whose_transport_cannot_be_had_is_h01() -> None:
    from harness.errors import HostUnreachable

    def away(host: Host) -> Transport:
        raise HostUnreachable("node1: connection refused")

    (problem,) = check_gates(None, away, [HOST], "nvidia-smi", NO_LEFTOVER_CHECK, GateMemory())  # type: ignore[arg-type]
    assert problem.text == "node1: unreachable: node1: connection refused"
    assert problem.fault is not None and problem.fault.code == "BENCH-H01"
