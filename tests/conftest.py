"""Shared fixtures: the local test infrastructure made by tests/infra/setup.sh.

`infra` describes it (two sshd test hosts, a client key, known_hosts, the base
image, the venv's site-packages that containers mount). Tests that need it skip
with a reason when it is not up, except under CI=true, where they fail: CI must
never pass by skipping the real tests.

`make_hosts_yaml` writes an inventory (harness/core/inventory.py's schema) for those
hosts, with a free master port and a fresh work_dir per call.

Markers come from fixtures, never from a list of tests: a test that uses (directly
or through another fixture) `infra` or `docker_engine` is marked `hosts`, one that
uses `make_slurm_yaml` `slurm`, one that uses `training_processes` `payload` (see
MARKERS). A test that calls docker, ssh or Slurm itself, or starts real training
processes on this machine (torchrun, `harness bench` on the local access, the cases'
training scripts), must ask for the fixture that stands for it. `make test-fast` runs
`-m "not hosts and not slurm and not payload"`: what needs none of them and starts
no training; `make test` runs everything.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import pytest
import yaml
from hostkit import RANK_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTHOSTS = REPO_ROOT / ".cache" / "testhosts"
BASE_IMAGE = "bench-base/debian:bookworm"
SITE_TARGET = "/opt/bench-site"  # where containers see the venv's site-packages
WORK_ROOT = Path("/tmp/bench-work")
SETUP_HINT = "run `bash tests/infra/setup.sh` first"


class TestHost(NamedTuple):
    name: str
    address: str
    port: int


@dataclass(frozen=True)
class TestInfra:
    __test__ = False  # not a test class, despite the name

    repo_root: Path
    client_key: Path
    known_hosts: Path
    hosts: list[TestHost]
    site_packages: Path
    base_image: str = BASE_IMAGE
    # A second Docker engine with its own image store (tests/infra/setup.sh).
    second_engine: str = "unix:///run/bench-engine2/docker.sock"
    # Nothing listens here, ever: the "unreachable host" of the tests.
    unreachable: TestHost = field(default=TestHost("unreachable", "127.0.0.9", 2222))

    def host(self, name: str) -> TestHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no test host {name!r}; known: {[h.name for h in self.hosts]}")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _port_open(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_free_port() -> int:
    """A TCP port nothing listens on, on any local address (127.0.0.1 included)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _docker_problems() -> list[str]:
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"`docker info` failed: {exc}"]
    return [] if info.returncode == 0 else [f"`docker info` failed: {(info.stderr or info.stdout).strip()}"]


def _infra_problems(infra: TestInfra) -> list[str]:
    problems = _docker_problems()
    if not problems and _docker("image", "inspect", infra.base_image).returncode != 0:
        problems.append(f"base image {infra.base_image} is missing")
    engine2 = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                             timeout=30, check=False, env={**os.environ, "DOCKER_HOST": infra.second_engine})
    if engine2.returncode != 0:
        problems.append(f"second docker engine {infra.second_engine} does not answer")
    for host in infra.hosts:
        if not _port_open(host.address, host.port):
            problems.append(f"test host {host.name} ({host.address}:{host.port}) accepts no connections")
    for path in (infra.client_key, infra.known_hosts, infra.site_packages):
        if not path.exists():
            problems.append(f"{path} is missing")
    return problems


def local_infra() -> TestInfra:
    """What tests/infra/setup.sh makes (also used by the scripts under bench/)."""
    return TestInfra(
        repo_root=REPO_ROOT,
        client_key=TESTHOSTS / "id_ed25519",
        known_hosts=TESTHOSTS / "known_hosts",
        hosts=[TestHost("node1", "127.0.0.2", 2222), TestHost("node2", "127.0.0.3", 2222)],
        site_packages=REPO_ROOT / ".venv" / "lib" / "python3.11" / "site-packages",
    )


def _require(problems: list[str]) -> None:
    """Skip the test when something it needs is not up; fail instead under CI=true."""
    if problems:
        reason = "test infrastructure not up: " + "; ".join(problems) + f" ({SETUP_HINT})"
        if _in_ci():
            pytest.fail(reason + " [CI=true: failing instead of skipping]", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """This machine's Docker engine, for a test that runs `docker` itself (tests/infra/setup.sh starts it)."""
    _require(_docker_problems())


@pytest.fixture(scope="session")
def infra() -> TestInfra:
    infra = local_infra()
    _require(_infra_problems(infra))
    return infra


@pytest.fixture(scope="session")
def training_processes() -> None:
    """Starting real training processes on this machine (torchrun, the payload, the cases' scripts): seconds of CPU each."""


# Marker <- a fixture that stands for something only tests/infra/setup.sh provides, or
# for real training processes on this machine (slow, not scarce: no xdist group).
# item.fixturenames is the closure of a test's fixtures, so `spare_sshd`, `make_hosts_yaml`
# and every fixture built on these are covered without being listed.
MARKERS: dict[str, str] = {
    "docker_engine": "hosts",  # the Docker engine
    "infra": "hosts",  # the SSH test hosts, both Docker engines, the base image
    "make_slurm_yaml": "slurm",  # the single-machine Slurm cluster (tests/infra/slurm.sh)
    "training_processes": "payload",  # torchrun / the payload / the cases' training scripts, here
}
# One pytest-xdist worker runs every test of a group, in order. The Slurm cluster's tests
# are a group of their own, beside the SSH test hosts' (on the one Docker engine, each
# side's workloads are labelled for its own host names, which the other's orphan checks
# and `clean` leave alone); a test may use one of the two, not both.
SLURM_GROUP, HOSTS_GROUP = "slurm", "testhosts"
SSH_HOSTS_FIXTURE = "make_hosts_yaml"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        markers = sorted({marker for fixture, marker in MARKERS.items() if fixture in names})
        for marker in markers:
            item.add_marker(marker)
        if "slurm" in markers:
            if SSH_HOSTS_FIXTURE in names:
                raise pytest.UsageError(f"{item.nodeid} uses both the Slurm cluster and the SSH test hosts: "
                                        "their tests run side by side, so one test uses one of them")
            item.add_marker(pytest.mark.xdist_group(SLURM_GROUP))
        elif "hosts" in markers:
            item.add_marker(pytest.mark.xdist_group(HOSTS_GROUP))


def write_hosts_yaml(
    directory: Path,
    infra: TestInfra,
    hosts: list[str] | tuple[str, ...] = ("node1", "node2"),
    extra_hosts: list[dict[str, Any]] | None = None,
    cluster_overrides: dict[str, Any] | None = None,
    *,
    devices: int = 2,
    work_base: Path | None = None,
    filename: str = "hosts.yaml",
) -> Path:
    """Write an inventory for the test hosts named in `hosts` (in node-rank order).

    extra_hosts: entries appended after them; each is merged over the standard
    ssh entry, so {"name": "ghost", "address": "127.0.0.9"} is enough.
    cluster_overrides: replace top-level keys of `cluster` (shallow: passing
    `env` replaces the whole env mapping).
    """
    work_base = work_base or WORK_ROOT / uuid.uuid4().hex[:12]

    def entry(name: str, address: str, **over: Any) -> dict[str, Any]:
        host = {
            "name": name,
            "address": address,
            "transport": "ssh",
            "port": 2222,
            "user": "root",
            "key": str(infra.client_key),
            "devices": devices,
            "work_dir": str(work_base / name),
        }
        host.update(over)
        return host

    host_entries = [entry(h.name, h.address, port=h.port) for h in map(infra.host, hosts)]
    for extra in extra_hosts or []:
        extra = dict(extra)
        host_entries.append(entry(extra.pop("name"), extra.pop("address"), **extra))

    cluster: dict[str, Any] = {
        "master_port": find_free_port(),
        "known_hosts": str(infra.known_hosts),
        "accept_unknown_host_keys": False,
        "env": {"GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": SITE_TARGET, **RANK_ENV},
        # This machine's hard memlock limit is 8 MiB: unlimited cannot be granted.
        "ulimits": ["stack=67108864:67108864"],
        "mounts": [{"source": str(infra.site_packages), "target": SITE_TARGET, "readonly": True}],
        "template_params": {"base_image": infra.base_image},
    }
    cluster.update(cluster_overrides or {})

    path = directory / filename
    path.write_text(yaml.safe_dump({"cluster": cluster, "hosts": host_entries}, sort_keys=False))
    return path


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


@pytest.fixture
def make_hosts_yaml(
    tmp_path: Path, infra: TestInfra, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Path]]:
    """Factory: make_hosts_yaml(hosts=["node1","node2"], extra_hosts=None,
    cluster_overrides=None, devices=2) -> Path of a fresh hosts.yaml.

    Each call gets its own file, master port and work dirs
    (/tmp/bench-work/<test>-<id>/<host>); the work dirs are removed after a
    passing test and kept after a failing one, for a look.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    work_bases: list[Path] = []

    def make(
        hosts: list[str] | tuple[str, ...] = ("node1", "node2"),
        extra_hosts: list[dict[str, Any]] | None = None,
        cluster_overrides: dict[str, Any] | None = None,
        devices: int = 2,
    ) -> Path:
        work_base = WORK_ROOT / f"{slug}-{uuid.uuid4().hex[:8]}"
        work_bases.append(work_base)
        n = len(work_bases)
        return write_hosts_yaml(
            tmp_path, infra, hosts, extra_hosts, cluster_overrides,
            devices=devices, work_base=work_base,
            filename="hosts.yaml" if n == 1 else f"hosts-{n}.yaml",
        )

    yield make
    if not request.node.stash.get(_FAILED, True):
        for work_base in work_bases:
            shutil.rmtree(work_base, ignore_errors=True)


@pytest.fixture
def make_slurm_yaml(tmp_path: Path, infra: TestInfra, request: pytest.FixtureRequest) -> Iterator[Callable[..., Path]]:
    """Factory: an inventory for the test Slurm cluster (tests/infra/slurm.sh:
    partition `bench`, nodes n1 on 127.0.0.2 and n2 on 127.0.0.3, both on this
    machine, so their work_dir is shared with the controller as a site's would be)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    work = WORK_ROOT / f"{slug}-{uuid.uuid4().hex[:8]}" / "slurm"

    def make(slurm_overrides: dict[str, Any] | None = None) -> Path:
        cluster: dict[str, Any] = {
            "backend": "slurm",
            "master_port": find_free_port(),
            "env": {"GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": SITE_TARGET, **RANK_ENV},
            "ulimits": ["stack=67108864:67108864"],
            "mounts": [{"source": str(infra.site_packages), "target": SITE_TARGET, "readonly": True}],
            "template_params": {"base_image": infra.base_image},
            "slurm": {"partition": "bench", "gpus_per_node": False, "work_dir": str(work), "devices": 2,
                      # Under the test cluster's KillWait of 5 s (tests/infra/slurm.sh).
                      "allocation_timeout_s": 120, "stop_grace_s": 3, **(slurm_overrides or {})},
        }
        path = tmp_path / "slurm-cluster.yaml"
        path.write_text(yaml.safe_dump({"cluster": cluster}, sort_keys=False))
        return path

    yield make
    if not request.node.stash.get(_FAILED, True):
        shutil.rmtree(work.parent, ignore_errors=True)


# pyenv's rehash lock in the home of the test hosts' user. A login whose rehash
# was killed midway (the fault tests kill sessions and sshds) leaves it behind,
# and every later login on this machine then prints "pyenv: cannot rehash"
# around its command's output. Only where the machine's .bashrc runs pyenv.
PYENV_REHASH_LOCK = Path.home() / ".pyenv" / "shims" / ".pyenv-shim"
STALE_LOCK_S = 30.0


@pytest.fixture(autouse=True)
def no_stale_pyenv_lock() -> None:
    try:
        if time.time() - PYENV_REHASH_LOCK.stat().st_mtime > STALE_LOCK_S:
            PYENV_REHASH_LOCK.unlink()
    except FileNotFoundError:
        pass
