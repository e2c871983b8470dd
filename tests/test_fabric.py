"""The fabric pieces (harness/fabric): the inventory model and its container
flags, the collective variables from the real vendor specs, the transport NCCL
chose according to recorded logs, the fallback rule, and the ibstat preflight."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cases.allreduce import bus_factor
from harness import REPO_ROOT
from harness.core.vendor import VendorSpec, available_vendors, load_vendor
from harness.errors import UserError
from harness.fabric.env import collective_env, unsupported_settings
from harness.fabric.model import Fabric, docker_run_args
from harness.fabric.nccl_log import fallback_problem, node_transport, parse_nccl_log, unverified_nodes
from harness.fabric.preflight import ib_problems
from harness.yamlfile import load_model

FIXTURES = REPO_ROOT / "tests" / "fixtures"
NCCL = FIXTURES / "nccl"
IBSTAT = FIXTURES / "ibstat"
IB = Fabric(type="ib", hcas=["mlx5_0", "mlx5_1"], socket_ifname="ib0", gdr=True)


def nccl(name: str) -> str:
    return (NCCL / name).read_text(encoding="utf-8")


def ibstat(name: str) -> str:
    return (IBSTAT / name).read_text(encoding="utf-8")


# --- the model ---------------------------------------------------------------------


def test_fabric_defaults_to_none_and_sets_nothing() -> None:
    fabric = Fabric()
    assert (fabric.type, fabric.hcas, fabric.gdr, fabric.allow_fallback) == ("none", [], False, False)
    assert docker_run_args(fabric) == []
    assert docker_run_args(Fabric(type="ethernet", socket_ifname="eth0")) == []


def test_ib_fabric_gives_containers_the_rdma_devices_ipc_lock_and_unlimited_memlock() -> None:
    args = docker_run_args(Fabric(type="ib", hcas=["mlx5_0:1"]))
    assert args == ["--device", "/dev/infiniband", "--cap-add", "IPC_LOCK", "--ulimit", "memlock=-1:-1"]


def test_hca_entries_may_name_a_port() -> None:
    fabric = Fabric(type="ib", hcas=["mlx5_0:1", "mlx5_bond_0", "rocep204s0f0v6:2"])
    assert fabric.hca_ports() == [("mlx5_0", 1), ("mlx5_bond_0", None), ("rocep204s0f0v6", 2)]


@pytest.mark.parametrize("data, message", [
    ({"type": "ib"}, "type ib needs hcas"),
    ({"type": "ethernet", "hcas": ["mlx5_0"]}, "hcas are only used with type ib"),
    ({"type": "ethernet", "gdr": True}, "gdr (GPU Direct RDMA) needs type ib"),
    ({"type": "none", "socket_ifname": "eth0"}, "socket_ifname needs type ib or ethernet"),
    ({"type": "ib", "hcas": ["mlx5 0"]}, "'mlx5 0' is not an HCA name"),
    ({"type": "ib", "hcas": ["mlx5_0", "mlx5_0"]}, "an HCA is listed twice"),
    ({"type": "ethernet", "socket_ifname": "eth0,eth1"}, "'eth0,eth1' is not a network interface name"),
    ({"type": "infiniband", "hcas": ["mlx5_0"]}, "'ib', 'ethernet' or 'none'"),
    ({"type": "ib", "hcas": ["mlx5_0"], "hca": "mlx5_1"}, "Extra inputs are not permitted"),
])
def test_bad_fabrics_are_refused_with_a_message_that_says_what_was_expected(data: dict, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Fabric.model_validate(data)
    assert message in str(raised.value)


# --- the collective variables, from the real vendor specs -------------------------------


def test_nvidia_maps_an_ib_fabric_to_nccl_variables() -> None:
    env = collective_env(IB, load_vendor("nvidia").collective)
    assert env == {
        "NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": "mlx5_0,mlx5_1", "NCCL_SOCKET_IFNAME": "ib0",
        "NCCL_NET_GDR_LEVEL": "PHB", "NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET",
    }


def test_iluvatar_takes_the_same_nccl_variables() -> None:
    assert collective_env(IB, load_vendor("iluvatar").collective) == collective_env(IB, load_vendor("nvidia").collective)


def test_kunlunxin_maps_the_fabric_to_bkcl_variables() -> None:
    env = collective_env(IB, load_vendor("kunlunxin").collective)
    assert env == {"BKCL_USE_RDMA": "1", "BKCL_RDMA_NICS": "mlx5_0,mlx5_1", "BKCL_SOCKET_IFNAME": "ib0",
                   "BKCL_ENABLE_XDR": "1", "BKCL_DEBUG": "1"}
    assert load_vendor("kunlunxin").collective.transport_log is None  # BKCL's choice is recorded as unknown


def test_ethernet_disables_ib_and_gdr_is_only_set_when_asked() -> None:
    spec = load_vendor("nvidia").collective
    env = collective_env(Fabric(type="ethernet", socket_ifname="eth0"), spec)
    assert env == {"NCCL_IB_DISABLE": "1", "NCCL_SOCKET_IFNAME": "eth0", "NCCL_DEBUG": "INFO",
                   "NCCL_DEBUG_SUBSYS": "INIT,NET"}
    no_gdr = collective_env(Fabric(type="ib", hcas=["mlx5_0:1"]), spec)
    assert "NCCL_NET_GDR_LEVEL" not in no_gdr and no_gdr["NCCL_IB_HCA"] == "mlx5_0:1"


def test_a_fabric_of_type_none_sets_nothing_for_any_vendor() -> None:
    for vendor in available_vendors():
        assert collective_env(Fabric(), load_vendor(vendor).collective) == {}
        assert unsupported_settings(Fabric(), load_vendor(vendor).collective, vendor) == []


def test_what_a_vendor_cannot_express_is_reported_not_dropped() -> None:
    cpu = load_vendor("cpu").collective
    problems = unsupported_settings(IB, cpu, "cpu")
    assert any("no variable for hcas mlx5_0, mlx5_1" in p for p in problems)
    assert any("no setting for gdr" in p for p in problems)
    assert collective_env(Fabric(type="ethernet", socket_ifname="eth0"), cpu) == {"GLOO_SOCKET_IFNAME": "eth0"}
    assert unsupported_settings(IB, load_vendor("nvidia").collective, "nvidia") == []
    assert unsupported_settings(IB, None, "acme") == [
        "vendor acme has no collective: section in its vendor.yaml, so fabric type ib cannot be applied"]


def test_a_bad_collective_section_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "vendor.yaml"
    path.write_text("accelerator: X\ncollective:\n  library: NCCL\n  type_env:\n    ib: {NCCL_IB_DISABLE: 0}\n")
    with pytest.raises(UserError) as raised:
        load_model(path, VendorSpec, defaults={"name": "acme"})
    assert str(raised.value).startswith(f"{path}: collective.type_env.ib.NCCL_IB_DISABLE: Input should be a valid string")
    path.write_text("accelerator: X\ncollective: {library: NCCL, hcas_env: NCCL-IB-HCA}\n")
    with pytest.raises(UserError, match="collective.hcas_env: String should match pattern"):
        load_model(path, VendorSpec, defaults={"name": "acme"})


def test_the_fabric_code_names_no_vendor_and_no_library_variable() -> None:
    for name in ("model.py", "env.py", "preflight.py"):
        text = (REPO_ROOT / "harness" / "fabric" / name).read_text(encoding="utf-8")
        for word in ("nvidia", "iluvatar", "kunlunxin", "NCCL_", "BKCL", "GLOO_"):
            assert word not in text, f"{name} names {word}"


# --- what NCCL chose, from recorded logs --------------------------------------------------

# file -> (networks, transport, devices listed, devices the channels used, gdr, version)
EXPECTED = {
    "ib_gdrdma_nccl2.7.6.log": (("IB",), "ib", 9, ("mlx5_14:1", "mlx5_10:1", "mlx5_8:1"), True, "2.7.6+cuda11.1"),
    "ib_no_gdr_module.log": (("IB",), "ib", 0, ("IB/0",), False, None),
    "ib_nccl2.3.7.log": (("IB",), "ib", 4, (), None, "2.3.7+cuda9.0"),
    "ib_and_socket_nccl2.4.7.log": (("IB",), "ib", 1, (), None, "2.4.7+cuda10.0"),
    "roce_nccl2.19.3.log": (("IB",), "roce", 2, (), None, "2.19.3+cuda12.3"),
    "roce_ibext_fused.log": (("IBext_v8",), "roce", 2, ("mlx5_0:1+mlx5_1:1",), False, None),
    "socket_no_libibverbs.log": (("Socket",), "socket", 1, (), False, None),
    "socket_ib_cluster_channels.log": (("Socket",), "socket", 0, ("Socket/3",), False, None),
    "socket_no_ib_device_nccl2.27.5.log": (("Socket",), "socket", 1, (), None, "2.27.5+cuda12.9"),
    "socket_ib_disabled_nccl2.11.4.log": (("Socket",), "socket", 1, (), None, "2.11.4+cuda11.4"),
}


def test_every_recorded_log_has_an_expectation() -> None:
    assert sorted(p.name for p in NCCL.glob("*.log")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_parser_reads_what_nccl_chose(name: str) -> None:
    networks, transport, listed, used, gdr, version = EXPECTED[name]
    report = parse_nccl_log(nccl(name))
    assert (report.networks, report.transport, len(report.devices), report.devices_used, report.gdr,
            report.version) == (networks, transport, listed, used, gdr, version)
    assert report.library == "NCCL" and report.known


def test_device_lists_keep_hca_ports_link_layers_and_socket_addresses() -> None:
    mixed = parse_nccl_log(nccl("ib_gdrdma_nccl2.7.6.log"))
    assert [d.link for d in mixed.devices] == ["IB"] * 7 + ["RoCE"] * 2
    assert mixed.devices[0].label == "mlx5_8:1" and mixed.devices[0].index == 0
    fused = parse_nccl_log(nccl("roce_ibext_fused.log"))
    assert [d.ports for d in fused.devices] == [("mlx5_2:1", "mlx5_3:1"), ("mlx5_0:1", "mlx5_1:1")]
    sockets = parse_nccl_log(nccl("socket_no_ib_device_nccl2.27.5.log"))
    assert [(d.label, d.address, d.link) for d in sockets.devices] == [("eth0", "192.168.69.159", "Socket")]
    assert sockets.notes == ("NET/IB : No device found.",)
    assert parse_nccl_log(nccl("socket_no_libibverbs.log")).notes == ("Failed to open libibverbs.so[.1]",)


def test_describe_is_one_line_for_the_record() -> None:
    assert parse_nccl_log(nccl("ib_gdrdma_nccl2.7.6.log")).describe() == (
        "ib (mlx5_14:1, mlx5_10:1, mlx5_8:1), GPU Direct RDMA on, NCCL 2.7.6+cuda11.1")
    assert parse_nccl_log(nccl("roce_nccl2.19.3.log")).describe() == "roce (mlx5_10:1, mlx5_11:1), NCCL 2.19.3+cuda12.3"


def test_a_log_without_nccl_lines_is_unknown_not_a_guess() -> None:
    text = ":::BENCH {\"time_ms\": 1, \"key\": \"world\", \"rank\": 0, \"value\": {}}\nTraining started\n"
    report = parse_nccl_log(text)
    assert (report.transport, report.networks, report.devices, report.gdr) == (None, (), (), None)
    assert not report.known and report.describe().startswith("unknown")


def test_one_rank_on_sockets_makes_the_node_socket() -> None:
    report = node_transport([nccl("roce_nccl2.19.3.log"), nccl("socket_ib_disabled_nccl2.11.4.log")])
    assert report.transport == "socket" and set(report.networks) == {"IB", "Socket"}


# --- the fallback rule ---------------------------------------------------------------------


def test_an_ib_fabric_whose_node_ran_over_sockets_is_a_problem_naming_the_node() -> None:
    per_node = {
        "node 0 (alpha)": parse_nccl_log(nccl("ib_gdrdma_nccl2.7.6.log")),
        "node 1 (beta)": parse_nccl_log(nccl("socket_no_ib_device_nccl2.27.5.log")),
        "node 2 (gamma)": parse_nccl_log(nccl("roce_nccl2.19.3.log")),
    }
    problems = fallback_problem(IB, per_node)
    assert len(problems) == 1
    assert problems[0].startswith("node 1 (beta): NCCL fell back to TCP sockets over eth0")
    assert "fabric is ib with HCAs mlx5_0, mlx5_1" in problems[0]
    assert "NET/IB : No device found." in problems[0]


def test_every_socket_node_is_named_and_allow_fallback_is_the_callers_choice() -> None:
    per_node = {f"node {i}": parse_nccl_log(nccl(name)) for i, name in enumerate(
        ["socket_no_libibverbs.log", "socket_ib_cluster_channels.log", "ib_no_gdr_module.log"])}
    problems = fallback_problem(IB, per_node)
    assert [p.split(":")[0] for p in problems] == ["node 0", "node 1"]
    lenient = IB.model_copy(update={"allow_fallback": True})
    assert fallback_problem(lenient, per_node) == problems  # the caller turns them into warnings


def test_sockets_are_no_fallback_when_the_fabric_is_not_ib() -> None:
    per_node = {"node 0": parse_nccl_log(nccl("socket_ib_disabled_nccl2.11.4.log"))}
    assert fallback_problem(Fabric(type="ethernet", socket_ifname="en"), per_node) == []
    assert fallback_problem(Fabric(), per_node) == []


def test_nodes_without_transport_lines_are_unverified_not_fallbacks() -> None:
    per_node = {"node 0": parse_nccl_log(nccl("roce_nccl2.19.3.log")), "node 1": parse_nccl_log("no nccl here\n")}
    assert fallback_problem(IB, per_node) == []
    assert unverified_nodes(IB, per_node) == ["node 1"]


# --- preflight over recorded ibstat --------------------------------------------------------


def test_active_hcas_with_the_same_rate_everywhere_pass() -> None:
    hosts = {"alpha": ibstat("ibstat_mlx5_active_200_roce.txt"), "beta": ibstat("ibstat_mlx5_active_200_roce.txt")}
    assert ib_problems(Fabric(type="ib", hcas=["mlx5_0", "mlx5_1:1"]), hosts) == []


def test_a_down_port_names_the_host_the_hca_and_its_state() -> None:
    hosts = {"alpha": ibstat("ibstat_mlx5_active_200_roce.txt"), "beta": ibstat("ibstat_mlx5_down_40.txt")}
    problems = ib_problems(Fabric(type="ib", hcas=["mlx5_0", "mlx5_1:1"]), hosts)
    assert problems == [
        "beta: mlx5_0 has no Active port (port 1 Down (Disabled)), expected one Active",
        "beta: mlx5_1 port 1 is Down (physical state Disabled), expected Active",
    ]


def test_a_named_port_must_be_active_even_when_another_port_is() -> None:
    text = ibstat("ibstat_mlx4_dualport_down_active.txt")
    assert ib_problems(Fabric(type="ib", hcas=["mlx4_0:1"]), {"h": text}) == [
        "h: mlx4_0 port 1 is Down (physical state Disabled), expected Active"]
    assert ib_problems(Fabric(type="ib", hcas=["mlx4_0:2"]), {"h": text}) == []
    assert ib_problems(Fabric(type="ib", hcas=["mlx4_0"]), {"h": text}) == []  # no port named: one Active suffices
    assert ib_problems(Fabric(type="ib", hcas=["mlx4_0:3"]), {"h": text}) == ["h: mlx4_0 has no port 3 (ibstat lists ports 1, 2)"]


def test_mismatched_link_rates_name_every_host_and_rate() -> None:
    hosts = {"alpha": ibstat("ibstat_mlx5_active_200_roce.txt"), "beta": ibstat("ibstat_mlx5_active_100_roce.txt")}
    assert ib_problems(Fabric(type="ib", hcas=["mlx5_0"]), hosts) == [
        "alpha, beta: mlx5_0 link rates differ (alpha 200 Gb/s, beta 100 Gb/s); expected the same rate on every host"]


def test_a_missing_hca_names_the_host_and_what_ibstat_lists() -> None:
    text = (FIXTURES / "smi" / "ibstat_mlx5_active_200.txt").read_text(encoding="utf-8")
    problems = ib_problems(Fabric(type="ib", hcas=["mlx5_7", "mlx5_8"]), {"gpu3": text})
    assert problems == ["gpu3: HCA mlx5_8 not found (ibstat: stat of the device failed); ibstat lists mlx5_7"]
    problems = ib_problems(Fabric(type="ib", hcas=["mlx5_3"]), {"gpu4": ibstat("ibstat_mlx5_down_40.txt")})
    assert problems == ["gpu4: HCA mlx5_3 not found; ibstat lists mlx5_0, mlx5_1"]


def test_preflight_checks_nothing_without_an_ib_fabric() -> None:
    assert ib_problems(Fabric(type="ethernet"), {"h": ibstat("ibstat_mlx5_down_40.txt")}) == []


# --- the bus bandwidth formula -------------------------------------------------------------


@pytest.mark.parametrize("ranks, factor", [(1, 0.0), (2, 1.0), (4, 1.5), (8, 1.75), (16, 1.875)])
def test_bus_factor_is_2_n_minus_1_over_n(ranks: int, factor: float) -> None:
    assert bus_factor(ranks) == pytest.approx(factor)


def test_fixture_sources_are_listed() -> None:
    for folder, pattern in ((NCCL, "*.log"), (IBSTAT, "*.txt")):
        sources = (folder / "SOURCES.md").read_text(encoding="utf-8")
        for path in Path(folder).glob(pattern):
            assert f"`{path.name}`" in sources, path.name
    for path in NCCL.glob("*.log"):
        assert path.read_text(encoding="utf-8").startswith("# source: https://github.com/"), path.name
