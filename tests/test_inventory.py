from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT
from harness.backends.registry import make_backend
from harness.backends.slurm import SlurmBackend
from harness.core.inventory import FromEnv, load_inventory
from harness.errors import UserError

GOOD = """
cluster:
  master_port: 29500
  known_hosts: keys/known_hosts
  mounts: [{source: venv/site, target: /opt/site}]
hosts:
  - {name: a, address: 10.1.0.1, key: keys/id, work_dir: /w}
  - {name: b, address: 10.1.0.2, port: 2200, devices: 4, work_dir: /w}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_inventory_resolves_relative_paths_against_its_folder(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, GOOD))
    assert [h.name for h in inventory.hosts] == ["a", "b"]
    assert inventory.hosts[0].key == str(tmp_path / "keys" / "id")
    assert inventory.cluster.known_hosts == str(tmp_path / "keys" / "known_hosts")
    assert inventory.cluster.mounts[0].source == str(tmp_path / "venv" / "site")
    assert inventory.hosts[1].port == 2200 and inventory.hosts[1].devices == 4
    assert inventory.hosts[0].devices == 8  # default: an 8-card machine


def test_shipped_inventory_is_valid() -> None:
    inventory = load_inventory(REPO_ROOT / "hosts.yaml")
    assert inventory.hosts[0].transport == "local"


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("hosts:\n  - {name: a, address: h, port: 70000}\n", "hosts.a.port", "less than or equal to 65535"),
        ("hosts:\n  - {name: a, address: h, prot: 22}\n", "hosts.a.prot", "unknown field"),
        ("hosts:\n  - {name: a}\n", "hosts.a.address", "required field is missing"),
        ("hosts:\n  - {name: a, address: h, work_dir: rel/dir}\n", "hosts.a.work_dir", "absolute path"),
        ("hosts:\n  - {name: a, address: h, devices: 0}\n", "hosts.a.devices", "greater than or equal to 1"),
        ("hosts:\n  - {name: a, address: h, transport: telnet}\n", "hosts.a.transport", "'ssh' or 'local'"),
        ("cluster: {master_port: x}\nhosts:\n  - {name: a, address: h}\n", "cluster.master_port", "integer"),
        ("hosts:\n  - {name: a, address: h}\n  - {name: a, address: g}\n", "", "appears twice"),
    ],
)
def test_bad_inventory_names_file_and_field(tmp_path: Path, text: str, field: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_inventory(path)
    assert str(path) in str(info.value)
    assert field in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("hosts: []\n", "hosts", "expected at least one host"),
        ("cluster: {backend: kubernetes}\nhosts:\n  - {name: a, address: h}\n", "cluster.backend",
         "expected one of local, slurm, ssh, ssh-docker"),
        ("cluster: {backend: slurm, slurm: {work_dir: rel}}\n", "cluster.slurm", "absolute path"),
    ],
)
def test_backend_choice_and_its_section_are_checked(tmp_path: Path, text: str, field: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        make_backend(load_inventory(path))
    assert str(path) in str(info.value) and field in str(info.value) and message in str(info.value)


def test_a_backend_section_sits_under_its_own_name(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, "cluster: {backend: slurm, slurm: {work_dir: /shared, devices: 4}}\n"))
    assert inventory.cluster.backend_settings == {"work_dir": "/shared", "devices": 4}
    backend = make_backend(inventory)
    assert isinstance(backend, SlurmBackend) and backend.settings.devices == 4


def test_malformed_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts: [\n  - name: a\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_inventory(path)


def test_cli_exits_2_on_malformed_inventory_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts:\n  - {name: node1, address: 127.0.0.2, port: nope}\n")
    result = subprocess.run([sys.executable, "-m", "harness", "bench", "--hosts", str(path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "hosts.node1.port" in result.stderr and str(path) in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr


def test_env_values_may_come_from_the_controllers_environment(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, """
cluster:
  env: {NCCL_IB_TIMEOUT: 22, HF_TOKEN: {from_env: CI_HF_TOKEN}, PLAIN: text}
hosts:
  - {name: a, address: h}
"""))
    env = inventory.cluster.env
    assert env["NCCL_IB_TIMEOUT"] == "22" and env["PLAIN"] == "text"  # a YAML number is the variable's text
    assert isinstance(env["HF_TOKEN"], FromEnv) and env["HF_TOKEN"].from_env == "CI_HF_TOKEN"
    assert inventory.resolve_env({"CI_HF_TOKEN": "v"}) == (
        {"NCCL_IB_TIMEOUT": "22", "HF_TOKEN": "v", "PLAIN": "text"}, {"HF_TOKEN": "CI_HF_TOKEN"})
    with pytest.raises(UserError) as info:
        inventory.resolve_env({})
    assert str(info.value) == (f"{tmp_path / 'hosts.yaml'}: cluster.env.HF_TOKEN: environment variable CI_HF_TOKEN "
                               "is not set on the controller (the value of HF_TOKEN is read from it)")


@pytest.mark.parametrize(
    ("env", "field", "message"),
    [
        ("{'A B': x}", "cluster.env.A B", "should match pattern"),
        ("{A: {from_env: 1BAD}}", "cluster.env.A", "expected {from_env: VARIABLE_NAME}"),
        ("{A: {from_env: X, default: y}}", "cluster.env.A", "expected {from_env: VARIABLE_NAME}"),
        ("{A: [x]}", "cluster.env.A", "expected a string, or {from_env: VARIABLE_NAME}"),
        ("{A: true}", "cluster.env.A", "expected a string"),
    ],
)
def test_bad_env_entries_name_the_field(tmp_path: Path, env: str, field: str, message: str) -> None:
    path = write(tmp_path, f"cluster:\n  env: {env}\nhosts:\n  - {{name: a, address: h}}\n")
    with pytest.raises(UserError) as info:
        load_inventory(path)
    assert str(path) in str(info.value) and field in str(info.value) and message in str(info.value)


def test_template_params_take_lists_and_refuse_control_characters(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, """
cluster:
  template_params: {apt_packages: [curl, procps], base_image: "debian:12"}
hosts:
  - {name: a, address: h}
"""))
    assert inventory.cluster.template_params["apt_packages"] == ["curl", "procps"]
    path = write(tmp_path, 'cluster:\n  template_params: {base_image: "debian:12\\nRUN curl x | sh"}\n'
                           "hosts:\n  - {name: a, address: h}\n")
    with pytest.raises(UserError) as info:
        load_inventory(path)
    assert f"{path}: cluster.template_params.base_image: the value holds a newline" in str(info.value)


def test_the_payload_is_checked_against_the_backend(tmp_path: Path) -> None:
    pyxis_over_ssh = write(tmp_path, "cluster: {payload: {type: pyxis}}\nhosts:\n  - {name: a, address: h}\n")
    with pytest.raises(UserError) as info:
        make_backend(load_inventory(pyxis_over_ssh))
    assert "cluster.payload.type" in str(info.value) and "slurm backend only" in str(info.value)
    spaced = write(tmp_path, "cluster: {payload: {type: bare, python: /opt/my python}}\nhosts:\n  - {name: a, address: h}\n")
    with pytest.raises(UserError) as info:
        load_inventory(spaced)
    assert "payload.python" in str(info.value)


def test_the_first_connections_window_comes_from_the_inventory() -> None:
    from harness.backends.ssh import CONNECT_WINDOW_S, open_transport
    from harness.core.inventory import Cluster, Host

    host = Host(name="n1", address="127.0.0.9", port=2222)
    assert open_transport(host, Cluster()).connect_window_s == CONNECT_WINDOW_S == 20.0  # type: ignore[attr-defined]
    assert open_transport(host, Cluster(connect_window_s=3)).connect_window_s == 3  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        Cluster(connect_window_s=0)
