"""The test infrastructure itself (tests/infra/setup.sh): SSH hosts with verified
host keys, the local base image running the venv's torch, the inventory helper."""

from __future__ import annotations

import socket
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
import pytest

if TYPE_CHECKING:
    from conftest import TestHost, TestInfra


def _connect(infra: TestInfra, host: TestHost, known_hosts: Path) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host.address,
            port=host.port,
            username="root",
            key_filename=str(infra.client_key),
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
        )
    except BaseException:
        client.close()
        raise
    return client


def _run(client: paramiko.SSHClient, command: str, timeout: float = 30) -> tuple[int, str]:
    channel = client.get_transport().open_session(timeout=timeout)
    channel.settimeout(timeout)
    channel.set_combine_stderr(True)  # one stream to drain
    channel.exec_command(command)
    output = b""
    while chunk := channel.recv(32768):
        output += chunk
    return channel.recv_exit_status(), output.decode("utf-8", "replace")


@pytest.mark.parametrize("name", ["node1", "node2"])
def test_ssh_host_answers_with_verified_host_key(infra: TestInfra, name: str) -> None:
    host = infra.host(name)
    client = _connect(infra, host, infra.known_hosts)
    try:
        status, output = _run(
            client,
            'command -v docker && command -v python3 && docker version --format "{{.Server.Version}}"',
        )
    finally:
        client.close()
    assert status == 0, output
    docker_path, python_path, server_version = output.split()
    assert docker_path.endswith("/docker") and python_path.endswith("python3")
    assert server_version


def test_hosts_are_separate_sshd_with_own_keys(infra: TestInfra) -> None:
    keys = paramiko.HostKeys(str(infra.known_hosts))
    entries = [keys.lookup(f"[{h.address}]:{h.port}") for h in infra.hosts]
    assert all(entries), keys.keys()
    fingerprints = {e["ssh-ed25519"].get_fingerprint() for e in entries}
    assert len(fingerprints) == len(infra.hosts)


def test_unknown_host_key_is_rejected(infra: TestInfra, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _connect(infra, infra.hosts[0], empty)


def test_wrong_host_key_is_rejected(infra: TestInfra, tmp_path: Path) -> None:
    node1, node2 = infra.hosts[:2]
    node2_key = paramiko.HostKeys(str(infra.known_hosts)).lookup(f"[{node2.address}]:{node2.port}")
    swapped = paramiko.HostKeys()
    swapped.add(f"[{node1.address}]:{node1.port}", "ssh-ed25519", node2_key["ssh-ed25519"])
    swapped.save(str(tmp_path / "known_hosts"))
    with pytest.raises(paramiko.BadHostKeyException):
        _connect(infra, node1, tmp_path / "known_hosts")


def test_unreachable_host_is_unused(infra: TestInfra) -> None:
    with pytest.raises(OSError):
        socket.create_connection((infra.unreachable.address, infra.unreachable.port), timeout=2).close()


def test_base_image_runs_venv_torch(infra: TestInfra) -> None:
    script = (
        "import sys, torch, torchvision, torch.distributed as dist;"
        "print(torch.__version__, torchvision.__version__, dist.is_gloo_available(),"
        " '%d.%d' % sys.version_info[:2], torch.ones(2, 3).sum().item())"
    )
    result = subprocess.run(
        ["docker", "run", "--rm", "--net=host", "--label", "bench.test=test_infra",
         "-v", f"{infra.site_packages}:/opt/bench-site:ro", "-e", "PYTHONPATH=/opt/bench-site",
         infra.base_image, "python3", "-c", script],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    torch_v, vision_v, gloo, py, total = result.stdout.split()
    # The metadata version lacks torch's local suffix (+cu130, +cpu).
    assert torch_v.split("+")[0] == version("torch")
    assert vision_v.split("+")[0] == version("torchvision")
    assert (gloo, py, total) == ("True", "3.11", "6.0")


def test_hosts_yaml_is_a_valid_inventory(infra: TestInfra, make_hosts_yaml) -> None:
    from harness.core.inventory import load_inventory

    path = make_hosts_yaml(extra_hosts=[{"name": "ghost", "address": infra.unreachable.address}])
    inventory = load_inventory(path)
    assert [(h.name, h.address, h.port) for h in inventory.hosts] == [
        *infra.hosts, ("ghost", "127.0.0.9", 2222)
    ]
    assert inventory.hosts[0].key == str(infra.client_key)
    assert len({h.work_dir for h in inventory.hosts}) == 3
    assert inventory.cluster.known_hosts == str(infra.known_hosts)
    assert inventory.cluster.env["PYTHONPATH"] == "/opt/bench-site"
    assert inventory.cluster.mounts[0].source == str(infra.site_packages)
    assert inventory.cluster.template_params["base_image"] == infra.base_image
    assert make_hosts_yaml() != path  # a second file, its own port and work dirs
