"""Capturing what a host runs over a Transport: machine (dmidecode), devices
(the vendor's smi tool), CPU, network (ibstat, ibv_devinfo, NIC speeds), OS,
kernel, Docker, and the framework versions on the host or inside an image.

Every probe is guarded. A tool that is missing or fails leaves its field
``unknown`` and records why in ``unknown_reasons``; capture never raises for a
host that simply lacks a tool.

Every probe's answer is read between markers it prints itself
(harness/backends/marked.py): what the host's login shell prints around a
command (banners, MOTDs, module or pyenv messages) never lands in a field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from harness.backends.marked import run_marked, run_marked_batch
from harness.backends.transport import CommandResult, Transport
from harness.devices.readings import DeviceInventory
from harness.devices.registry import inventory_commands
from harness.errors import HarnessError
from harness.hostinfo.model import FRAMEWORK_FIELDS, EnvironmentInfo, FrameworkVersions
from harness.hostinfo.parsers import (
    parse_cpuinfo_model,
    parse_framework_probe,
    parse_ibstat,
    parse_ibv_devinfo,
    parse_lscpu_model,
    parse_nic_speeds,
    parse_os_release,
)
from harness.parallel import run_all

DEFAULT_PYTHON = "python3"

# The framework probe, run as ``python3 -c PYTHON_PROBE`` on the host or in a
# container. It prints one JSON object; a failing import becomes "<name>_error".
PYTHON_PROBE = """\
import json, platform
info = {"python": platform.python_version()}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    try:
        info["cudnn"] = torch.backends.cudnn.version()
    except Exception as exc:
        info["cudnn_error"] = repr(exc)
    try:
        info["nccl"] = torch.cuda.nccl.version()
    except Exception as exc:
        info["nccl_error"] = repr(exc)
except Exception as exc:
    info["torch_error"] = repr(exc)
try:
    import torchvision
    info["torchvision"] = torchvision.__version__
except Exception as exc:
    info["torchvision_error"] = repr(exc)
print(json.dumps(info, default=str))
"""


class _Prober:
    """Runs probe commands on one host, each read between its own markers;
    failures become reasons, not exceptions."""

    def __init__(self, transport: Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        self.answered: dict[tuple[str, ...], CommandResult] = {}

    def prefetch(self, commands: list[list[str]]) -> None:
        """Run these in one round trip; run() then reads their answers. What the
        batch leaves unanswered runs alone when asked for."""
        try:
            answers = run_marked_batch(self.transport, commands, timeout=self.timeout)
        except HarnessError:
            return
        for argv, answer in zip(commands, answers):
            if answer is not None:
                self.answered[tuple(argv)] = answer

    def run(self, argv: list[str], accept_nonzero: bool = False) -> tuple[str | None, str | None]:
        """(output, None) on success, (None, reason) otherwise."""
        result = self.answered.get(tuple(argv))
        if result is None:
            try:
                result = run_marked(self.transport, argv, timeout=self.timeout)
            except Exception as exc:  # a transport failure is a reason like any other
                return None, f"`{argv[0]}`: {type(exc).__name__}: {exc}"
        if result.exit_code is None:
            return None, f"`{' '.join(argv[:3])}` timed out after {self.timeout:g}s"
        if result.exit_code == 127:
            return None, f"`{argv[0]}` not found"
        if result.exit_code != 0 and not accept_nonzero:
            return None, f"`{' '.join(argv[:3])}` exited {result.exit_code}: {_summary(result.output)}"
        return result.output, None

    def first(self, attempts: Iterable[tuple[list[str], Callable[[str], Any]]], reasons: list[str], empty: str) -> Any:
        """Try (argv, parse) in turn: the first truthy parsed value, or None
        with why each attempt failed added to ``reasons``."""
        for argv, parse in attempts:
            output, reason = self.run(argv)
            if output is None:
                reasons.append(reason or f"`{argv[0]}` failed")
                continue
            value = parse(output)
            if value:
                return value
            reasons.append(f"`{' '.join(argv)}` {empty}")
        return None


def _summary(output: str) -> str:
    """The line of a failed command's output that says why: the last one
    mentioning an error, else the last one."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no output"
    errors = [line for line in lines if "error" in line.lower() or "no such" in line.lower()]
    return (errors or lines)[-1][:200]


def _probe_accelerators(prober: _Prober, info: EnvironmentInfo, smi: str | None) -> None:
    reasons: list[str] = []
    for argv, parse in inventory_commands(smi):
        output, reason = prober.run(list(argv))
        if output is not None:
            inventory = parse(output)
            if inventory.models:
                _set_accelerators(info, inventory)
                return
            reason = f"`{argv[0]}` listed no devices"
        reasons.append(reason or f"`{argv[0]}` failed")
    why = "; ".join(reasons)
    for name in ("accelerator_model", "accelerator_count", "accelerator_driver", "accelerator_memory_mib"):
        info.unknown_reasons[name] = why


def _set_accelerators(info: EnvironmentInfo, inventory: DeviceInventory) -> None:
    models = inventory.models
    counts = Counter(models)
    info.accelerator_model = ", ".join(counts) if len(counts) > 1 else models[0]
    info.accelerator_count = len(models)
    info.accelerator_memory_mib = inventory.memory_mib[0] if inventory.memory_mib else None
    if inventory.driver:
        info.accelerator_driver = inventory.driver
    else:
        info.unknown_reasons["accelerator_driver"] = "the device tool printed no driver version"


def _probe_first(prober: _Prober, info: EnvironmentInfo, field: str, attempts: Iterable[tuple[list[str], Any]]) -> None:
    """Try (argv, parse) in turn; the first parsed value fills ``field``."""
    reasons: list[str] = []
    value = prober.first(attempts, reasons, "printed nothing usable")
    if value:
        setattr(info, field, value)
    else:
        info.unknown_reasons[field] = "; ".join(reasons)


_NETWORK_PROBES = [["ibstat"], ["ibv_devinfo"], ["ls", "/sys/class/net"]]


def _probe_network(prober: _Prober, info: EnvironmentInfo) -> None:
    reasons: list[str] = []
    ibstat, ibv_devinfo, list_nics = _NETWORK_PROBES
    found = prober.first([(ibstat, parse_ibstat), (ibv_devinfo, parse_ibv_devinfo)], reasons, "shows no active port")
    if found:
        info.network_type, info.network_rate = found
        return
    listing, reason = prober.run(list_nics)
    if listing is None:
        reasons.append(reason or "cannot list /sys/class/net")
    else:
        nics = [name for name in listing.split() if name != "lo"]
        speeds: dict[str, int] = {}
        if nics:
            output, reason = prober.run(
                ["grep", "-s", "-H", ".", *(f"/sys/class/net/{nic}/speed" for nic in nics)], accept_nonzero=True
            )
            speeds = parse_nic_speeds(output or "")
        if speeds:
            fastest = max(speeds, key=lambda nic: speeds[nic])
            info.network_type = "Ethernet"
            info.network_rate = f"{speeds[fastest] / 1000:g}Gb/s"
            return
        reasons.append(f"no NIC besides lo reports a link speed ({', '.join(nics) or 'none found'})")
    why = "; ".join(reasons)
    info.unknown_reasons["network_type"] = why
    info.unknown_reasons["network_rate"] = why


def framework_probe_argv(python: str = DEFAULT_PYTHON) -> list[str]:
    return [python, "-c", PYTHON_PROBE]


def container_probe_argv(image: str, docker_args: Sequence[str] = (), python: str = DEFAULT_PYTHON,
                         docker: Sequence[str] = ("docker",)) -> list[str]:
    """``docker run`` for the framework probe inside ``image``. The image must be
    local (``--pull=never``: nothing is fetched); ``docker_args`` are the
    controller's own mount/env/device arguments."""
    return [*docker, "run", "--rm", "--pull=never", "--entrypoint", python, *docker_args, image, "-c", PYTHON_PROBE]


def _capture_framework(prober: _Prober, argv: list[str], source: str) -> FrameworkVersions:
    output, reason = prober.run(argv)
    if output is None:
        versions = FrameworkVersions(source=source)
        versions.unknown_reasons = {name: reason or "probe failed" for name in FRAMEWORK_FIELDS}
        return versions
    versions = parse_framework_probe(output)
    versions.source = source
    return versions


def capture_environment(
    transport: Transport,
    timeout: float = 20,
    *,
    smi: str | None = None,
    python: str | None = DEFAULT_PYTHON,
    image: str | None = None,
    docker_args: Sequence[str] = (),
    docker: Sequence[str] = ("docker",),
) -> EnvironmentInfo:
    """Everything the vendor page's environment section lists, for one host.

    ``smi`` names the vendor's device tool (a devices.registry.SMI_TOOLS key);
    None tries nvidia-smi, ixsmi and xpu_smi in turn. The framework versions
    come from ``python`` on the host, or from inside ``image`` when one is
    given; with neither (python=None) they are left unknown. ``docker`` is how
    the docker CLI is called on that host (with its DOCKER_HOST, launch.docker_cli)."""
    prober = _Prober(transport, timeout)
    info = EnvironmentInfo(host=transport.host, captured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    firsts: dict[str, list[tuple[list[str], Callable[[str], Any]]]] = {
        "machine_model": [(["dmidecode", "-s", "system-product-name"], lambda out: out.strip()),
                          (["cat", "/sys/class/dmi/id/product_name"], lambda out: out.strip())],
        "cpu_model": [(["cat", "/proc/cpuinfo"], parse_cpuinfo_model), (["lscpu"], parse_lscpu_model)],
        "os": [(["cat", "/etc/os-release"], parse_os_release)],
        "kernel": [(["uname", "-r", "-m"], lambda out: " ".join(out.split()))],
        "docker_version": [([*docker, "version", "--format", "{{.Server.Version}}"], lambda out: out.strip())],
    }
    # Every probe and fallback whose command is known up front, in one round trip;
    # the fallbacks are then read in order from its answers (a dozen round trips
    # in a row, several for a host without the first tool of a group, before).
    prober.prefetch([argv for attempts in firsts.values() for argv, _ in attempts]
                    + [list(argv) for argv, _ in inventory_commands(smi)] + _NETWORK_PROBES)
    groups: list[Callable[[], None]] = [
        *(lambda field=field, attempts=attempts: _probe_first(prober, info, field, attempts)
          for field, attempts in firsts.items()),
        lambda: _probe_accelerators(prober, info, smi),
        lambda: _probe_network(prober, info),
    ]
    run_all(lambda group: group(), groups)
    if image:
        info.framework = _capture_framework(
            _Prober(transport, max(timeout, 120)),
            container_probe_argv(image, docker_args, python or DEFAULT_PYTHON, docker),
            f"image {image} on {transport.host}",
        )
    elif python is None:
        # The framework is the image's business; the training processes report it.
        info.unknown_reasons["framework"] = "not probed on the host"
    else:
        info.framework = _capture_framework(
            _Prober(transport, max(timeout, 60)), framework_probe_argv(python), f"{python} on {transport.host}"
        )
    return info
