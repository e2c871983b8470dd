"""What a host runs: captured over a Transport, compared across hosts and with
the environment a vendor page declares.

Every probe is guarded. A tool that is missing or fails leaves its field
``unknown`` and records why in ``unknown_reasons``; capture never raises for a
host that simply lacks a tool.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from harness.backends.transport import Transport
from harness.devices.monitor import xpu_smi_rows
from harness.parallel import run_all

UNKNOWN = "unknown"
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

FRAMEWORK_FIELDS = ("python", "torch", "cuda", "cudnn", "nccl", "torchvision")


class FrameworkVersions(BaseModel):
    python: str = UNKNOWN
    torch: str = UNKNOWN
    cuda: str = UNKNOWN  # torch.version.cuda; "unknown" for a CPU build
    cudnn: str = UNKNOWN
    nccl: str = UNKNOWN
    torchvision: str = UNKNOWN
    source: str = ""  # "python3 on <host>" or "image <name> on <host>"
    unknown_reasons: dict[str, str] = Field(default_factory=dict)


class EnvironmentInfo(BaseModel):
    host: str
    captured_at: str = ""
    machine_model: str = UNKNOWN
    accelerator_model: str = UNKNOWN
    accelerator_count: int | None = None
    accelerator_memory_mib: float | None = None  # per device, from the smi tool
    accelerator_driver: str = UNKNOWN
    cpu_model: str = UNKNOWN
    network_type: str = UNKNOWN
    network_rate: str = UNKNOWN
    os: str = UNKNOWN
    kernel: str = UNKNOWN  # `uname -r -m`: "5.4.0-113-generic x86_64"
    docker_version: str = UNKNOWN
    framework: FrameworkVersions = Field(default_factory=FrameworkVersions)
    unknown_reasons: dict[str, str] = Field(default_factory=dict)  # field -> why it is unknown

    def comparable_fields(self) -> dict[str, str]:
        """Everything two hosts of one run should agree on, as strings."""
        fields: dict[str, str] = {
            "machine_model": self.machine_model,
            "accelerator_model": self.accelerator_model,
            "accelerator_count": str(self.accelerator_count) if self.accelerator_count is not None else UNKNOWN,
            "accelerator_memory_mib": _number_text(self.accelerator_memory_mib),
            "accelerator_driver": self.accelerator_driver,
            "cpu_model": self.cpu_model,
            "network_type": self.network_type,
            "network_rate": self.network_rate,
            "os": self.os,
            "kernel": self.kernel,
            "docker_version": self.docker_version,
        }
        for name in FRAMEWORK_FIELDS:
            fields[f"framework.{name}"] = getattr(self.framework, name)
        return fields


def _number_text(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:g}"


# --------------------------------------------------------------------------- pure parsers


def parse_os_release(text: str) -> str | None:
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "PRETTY_NAME":
            return value.strip().strip('"').strip("'") or None
    return None


def parse_cpuinfo_model(text: str) -> str | None:
    """``model name`` from /proc/cpuinfo (x86); None where it has none (most ARM)."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("model name", "cpu model") and value.strip():
            return value.strip()
    return None


def parse_lscpu_model(text: str) -> str | None:
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Model name" and value.strip():
            return value.strip()
    return None


def parse_ibstat(text: str) -> tuple[str, str] | None:
    """(link layer, rate) of the fastest Active port in ``ibstat`` output, e.g.
    ("InfiniBand", "200Gb/s"); None when no port is Active."""
    best: tuple[float, str] | None = None
    port: dict[str, str] | None = None
    ports: list[dict[str, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if re.match(r"^Port \d+:$", stripped):
            port = {}
            ports.append(port)
            continue
        if line.startswith("CA "):
            port = None
            continue
        if port is not None and ":" in stripped:
            name, _, value = stripped.partition(":")
            port[name.strip()] = value.strip()
    for fields in ports:
        if fields.get("State", "").lower() != "active":
            continue
        try:
            rate = float(fields.get("Rate", ""))
        except ValueError:
            continue
        if best is None or rate > best[0]:
            best = (rate, fields.get("Link layer", "InfiniBand"))
    if best is None:
        return None
    return best[1], f"{best[0]:g}Gb/s"


def parse_ibv_devinfo(text: str) -> tuple[str, str] | None:
    """(link layer, rate) of the fastest PORT_ACTIVE port in ``ibv_devinfo``:
    rate = active_width (4X) x active_speed (50.0 Gbps)."""
    best: tuple[float, str] | None = None
    state = layer = ""
    width = speed = None

    def close() -> None:
        nonlocal best
        if state.startswith("PORT_ACTIVE") and width and speed:
            rate = width * speed
            if best is None or rate > best[0]:
                best = (rate, layer or "InfiniBand")

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("port:"):
            close()
            state, layer, width, speed = "", "", None, None
        elif stripped.startswith("state:"):
            state = stripped.partition(":")[2].strip()
        elif stripped.startswith("link_layer:"):
            layer = stripped.partition(":")[2].strip()
        elif stripped.startswith("active_width:"):
            match = re.search(r"(\d+)X", stripped)
            width = float(match.group(1)) if match else None
        elif stripped.startswith("active_speed:"):
            match = re.search(r"(\d+(?:\.\d+)?)\s*Gbps", stripped)
            speed = float(match.group(1)) if match else None
    close()
    if best is None:
        return None
    return best[1], f"{best[0]:g}Gb/s"


def parse_nic_speeds(text: str) -> dict[str, int]:
    """NIC -> Mb/s from ``grep -s -H . /sys/class/net/<nic>/speed ...``;
    loopback and links without a speed (-1, unreadable) are left out."""
    speeds: dict[str, int] = {}
    for line in text.splitlines():
        path, _, value = line.rpartition(":")
        match = re.search(r"/sys/class/net/([^/]+)/speed$", path)
        if match is None or match.group(1) == "lo":
            continue
        try:
            speed = int(value.strip())
        except ValueError:
            continue
        if speed > 0:
            speeds[match.group(1)] = speed
    return speeds


def parse_query_csv(text: str, fields: Sequence[str]) -> list[dict[str, str]]:
    """Rows of ``nvidia-smi``/``ixsmi --query-gpu=... --format=csv,noheader``."""
    rows: list[dict[str, str]] = []
    for cells in csv.reader(io.StringIO(text), skipinitialspace=True):
        cells = [cell.strip() for cell in cells]
        if not any(cells):
            continue
        if len(cells) < len(fields):
            continue
        if len(cells) > len(fields):  # a device name with a comma in it
            extra = len(cells) - len(fields)
            name_at = list(fields).index("name") if "name" in fields else 0
            cells[name_at : name_at + extra + 1] = [", ".join(cells[name_at : name_at + extra + 1])]
        rows.append(dict(zip(fields, cells)))
    return rows


_MIB = re.compile(r"^(\d+(?:\.\d+)?)\s*(MiB)?$")


def parse_xpu_smi_inventory(text: str) -> tuple[list[str], list[float], str | None]:
    """(model per device, memory total MiB per device, driver version) from the
    default ``xpu_smi`` table."""
    driver_match = re.search(r"^Driver Version:\s*(\S+)", text, re.MULTILINE)
    models: list[str] = []
    totals: list[float] = []
    for row in xpu_smi_rows(text):
        if "Model" not in row:
            continue
        models.append(row["Model"])
        memory = re.search(r"/\s*(\d+(?:\.\d+)?)\s*MB", row.get("Memory", ""))
        if memory:
            totals.append(float(memory.group(1)))
    return models, totals, driver_match.group(1) if driver_match else None


def parse_framework_probe(output: str) -> FrameworkVersions:
    """The JSON line PYTHON_PROBE prints -> versions, with a reason for each
    one it could not read."""
    payload: dict[str, Any] | None = None
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                continue
            break
    versions = FrameworkVersions()
    if payload is None:
        tail = output.strip().splitlines()[-1:] or ["no output"]
        versions.unknown_reasons = {name: f"probe printed no JSON: {tail[0]}" for name in FRAMEWORK_FIELDS}
        return versions
    for name in FRAMEWORK_FIELDS:
        value = payload.get(name)
        if name == "nccl" and isinstance(value, (list, tuple)):
            value = ".".join(str(part) for part in value)
        elif name == "nccl" and isinstance(value, int):
            value = _nccl_from_int(value)
        if value is None or value == "":
            error = payload.get(f"{name}_error") or payload.get("torch_error")
            reason = error or ("torch was built without it" if name in ("cuda", "cudnn", "nccl") else "not reported")
            versions.unknown_reasons[name] = str(reason)
            continue
        setattr(versions, name, str(value))
    return versions


def _nccl_from_int(code: int) -> str:
    """NCCL's packed version: 2708 -> 2.7.8 (before 2.9), 21803 -> 2.18.3."""
    if code >= 10000:
        return f"{code // 10000}.{code % 10000 // 100}.{code % 100}"
    return f"{code // 1000}.{code % 1000 // 100}.{code % 100}"


# --------------------------------------------------------------------------- probes over a transport


class _Prober:
    """Runs probe commands on one host; failures become reasons, not exceptions."""

    def __init__(self, transport: Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout

    def run(self, argv: list[str], accept_nonzero: bool = False) -> tuple[str | None, str | None]:
        """(output, None) on success, (None, reason) otherwise."""
        try:
            result = self.transport.run(argv, timeout=self.timeout)
        except Exception as exc:  # a transport failure is a reason like any other
            return None, f"`{argv[0]}`: {type(exc).__name__}: {exc}"
        if result.exit_code is None:
            return None, f"`{' '.join(argv[:3])}` timed out after {self.timeout:g}s"
        if result.exit_code == 127:
            return None, f"`{argv[0]}` not found"
        if result.exit_code != 0 and not accept_nonzero:
            return None, f"`{' '.join(argv[:3])}` exited {result.exit_code}: {_summary(result.output)}"
        return result.output, None


def _summary(output: str) -> str:
    """The line of a failed command's output that says why: the last one
    mentioning an error, else the last one."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no output"
    errors = [line for line in lines if "error" in line.lower() or "no such" in line.lower()]
    return (errors or lines)[-1][:200]


SMI_FAMILIES = {"nvidia-smi": "nvidia-smi", "ixsmi": "ixsmi", "ixsmi-csv": "ixsmi", "xpu_smi": "xpu_smi", "xpu_smi-m": "xpu_smi"}
INVENTORY_FIELDS = ("name", "memory.total", "driver_version")


def _probe_accelerators(prober: _Prober, info: EnvironmentInfo, smi: str | None) -> None:
    families = [SMI_FAMILIES.get(smi, smi)] if smi else ["nvidia-smi", "ixsmi", "xpu_smi"]
    reasons: list[str] = []
    for family in families:
        if family == "xpu_smi":
            output, reason = prober.run(["xpu_smi"])
            if output is not None:
                models, totals, driver = parse_xpu_smi_inventory(output)
                if models:
                    _set_accelerators(info, models, totals, driver)
                    return
                reason = "`xpu_smi` listed no devices"
        else:
            argv = [family, f"--query-gpu={','.join(INVENTORY_FIELDS)}", "--format=csv,noheader,nounits"]
            output, reason = prober.run(argv)
            if output is not None:
                rows = parse_query_csv(output, INVENTORY_FIELDS)
                if rows:
                    totals = [float(m.group(1)) for row in rows if (m := _MIB.match(row["memory.total"]))]
                    _set_accelerators(info, [row["name"] for row in rows], totals, rows[0]["driver_version"])
                    return
                reason = f"`{family}` listed no devices"
        reasons.append(reason or f"`{family}` failed")
    why = "; ".join(reasons)
    for name in ("accelerator_model", "accelerator_count", "accelerator_driver", "accelerator_memory_mib"):
        info.unknown_reasons[name] = why


def _set_accelerators(info: EnvironmentInfo, models: list[str], totals: list[float], driver: str | None) -> None:
    counts = Counter(models)
    info.accelerator_model = ", ".join(counts) if len(counts) > 1 else models[0]
    info.accelerator_count = len(models)
    info.accelerator_memory_mib = totals[0] if totals else None
    if driver:
        info.accelerator_driver = driver
    else:
        info.unknown_reasons["accelerator_driver"] = "the device tool printed no driver version"


def _probe_first(prober: _Prober, info: EnvironmentInfo, field: str, attempts: Iterable[tuple[list[str], Any]]) -> None:
    """Try (argv, parse) in turn; the first parsed value fills ``field``."""
    reasons: list[str] = []
    for argv, parse in attempts:
        output, reason = prober.run(argv)
        if output is None:
            reasons.append(reason or f"`{argv[0]}` failed")
            continue
        value = parse(output)
        if value:
            setattr(info, field, value)
            return
        reasons.append(f"`{' '.join(argv)}` printed nothing usable")
    info.unknown_reasons[field] = "; ".join(reasons)


def _probe_network(prober: _Prober, info: EnvironmentInfo) -> None:
    reasons: list[str] = []
    for argv, parse in ((["ibstat"], parse_ibstat), (["ibv_devinfo"], parse_ibv_devinfo)):
        output, reason = prober.run(argv)
        if output is None:
            reasons.append(reason or f"`{argv[0]}` failed")
            continue
        found = parse(output)
        if found:
            info.network_type, info.network_rate = found
            return
        reasons.append(f"`{argv[0]}` shows no active port")
    listing, reason = prober.run(["ls", "/sys/class/net"])
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


def container_probe_argv(image: str, docker_args: Sequence[str] = (), python: str = DEFAULT_PYTHON) -> list[str]:
    """``docker run`` for the framework probe inside ``image``. The image must be
    local (``--pull=never``: nothing is fetched); ``docker_args`` are the
    controller's own mount/env/device arguments."""
    return ["docker", "run", "--rm", "--pull=never", "--entrypoint", python, *docker_args, image, "-c", PYTHON_PROBE]


def _capture_framework(prober: _Prober, argv: list[str], source: str) -> FrameworkVersions:
    output, reason = prober.run(argv)
    if output is None:
        versions = FrameworkVersions(source=source)
        versions.unknown_reasons = {name: reason or "probe failed" for name in FRAMEWORK_FIELDS}
        return versions
    versions = parse_framework_probe(output)
    versions.source = source
    return versions


def capture_framework(transport: Transport, python: str = DEFAULT_PYTHON, timeout: float = 60) -> FrameworkVersions:
    """torch/CUDA/cuDNN/NCCL/torchvision as ``python`` on the host sees them."""
    return _capture_framework(_Prober(transport, timeout), framework_probe_argv(python), f"{python} on {transport.host}")


def capture_in_container(
    transport: Transport,
    image: str,
    docker_args: Sequence[str] = (),
    *,
    python: str = DEFAULT_PYTHON,
    timeout: float = 120,
) -> FrameworkVersions:
    """The same probe inside ``image`` (``docker run --rm``)."""
    argv = container_probe_argv(image, docker_args, python)
    return _capture_framework(_Prober(transport, timeout), argv, f"image {image} on {transport.host}")


def capture_environment(
    transport: Transport,
    timeout: float = 20,
    *,
    smi: str | None = None,
    python: str | None = DEFAULT_PYTHON,
    image: str | None = None,
    docker_args: Sequence[str] = (),
) -> EnvironmentInfo:
    """Everything the vendor page's environment section lists, for one host.

    ``smi`` names the vendor's device tool (a monitor.SMI_TOOLS key); None tries
    nvidia-smi, ixsmi and xpu_smi in turn. The framework versions come from
    ``python`` on the host, or from inside ``image`` when one is given; with
    neither (python=None) they are left unknown."""
    prober = _Prober(transport, timeout)
    info = EnvironmentInfo(host=transport.host, captured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # Each group fills its own fields; the groups run side by side (one round trip
    # each instead of a dozen in a row), fallbacks within a group stay in order.
    groups: list[Callable[[], None]] = [
        lambda: _probe_first(prober, info, "machine_model", [
            (["dmidecode", "-s", "system-product-name"], lambda out: out.strip()),
            (["cat", "/sys/class/dmi/id/product_name"], lambda out: out.strip()),
        ]),
        lambda: _probe_accelerators(prober, info, smi),
        lambda: _probe_first(prober, info, "cpu_model",
                             [(["cat", "/proc/cpuinfo"], parse_cpuinfo_model), (["lscpu"], parse_lscpu_model)]),
        lambda: _probe_network(prober, info),
        lambda: _probe_first(prober, info, "os", [(["cat", "/etc/os-release"], parse_os_release)]),
        lambda: _probe_first(prober, info, "kernel", [(["uname", "-r", "-m"], lambda out: " ".join(out.split()))]),
        lambda: _probe_first(prober, info, "docker_version",
                             [(["docker", "version", "--format", "{{.Server.Version}}"], lambda out: out.strip())]),
    ]
    run_all(lambda group: group(), groups)
    if image:
        info.framework = _capture_framework(
            _Prober(transport, max(timeout, 120)),
            container_probe_argv(image, docker_args, python or DEFAULT_PYTHON),
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


# --------------------------------------------------------------------------- comparing hosts


class FieldDifference(BaseModel):
    field: str
    values: dict[str, str]  # host -> value


def differences(envs: dict[str, EnvironmentInfo]) -> list[FieldDifference]:
    """Fields whose value is not the same on every host (``unknown`` counts as a value)."""
    if len(envs) < 2:
        return []
    per_host = {host: env.comparable_fields() for host, env in envs.items()}
    fields = next(iter(per_host.values())).keys()
    found: list[FieldDifference] = []
    for field in fields:
        values = {host: comparable[field] for host, comparable in per_host.items()}
        if len(set(values.values())) > 1:
            found.append(FieldDifference(field=field, values=values))
    return found


# --------------------------------------------------------------------------- drift from a vendor page


class DriftRow(BaseModel):
    field: str
    expected: str
    actual: str
    matches: bool | None  # None: the harness cannot check this one


_VERSION_SPLIT = re.compile(r"[.+\-_]")


def _version_parts(version: str) -> list[str]:
    return [part for part in _VERSION_SPLIT.split(version.strip().lower().lstrip("v")) if part]


def version_matches(expected: str, actual: str) -> bool:
    """The expected version's parts are a prefix of the actual one's:
    ``11.4`` matches ``11.4.2``, ``20.10.16`` does not match ``20.10.24+dfsg1``."""
    wanted, found = _version_parts(expected), _version_parts(actual)
    return bool(wanted) and found[: len(wanted)] == wanted


_PACKAGE_VERSION = re.compile(r"^(?P<name>[A-Za-z][\w.]*?)[-_ ]?(?P<version>\d.*)$")
TORCH_NAMES = ("torch", "pytorch")


def split_package_version(text: str) -> tuple[str, str | None]:
    """("pytorch", "1.8.0a0+52ea372") from ``pytorch-1.8.0a0+52ea372``;
    (text, None) when there is no version in it."""
    text = text.strip()
    if text[:1].isdigit():
        return "", text
    match = _PACKAGE_VERSION.match(text)
    if match is None:
        return text, None
    return match.group("name").lower(), match.group("version")


def os_matches(expected: str, actual: str) -> bool:
    """``Ubuntu 20.04`` matches ``Ubuntu 20.04.6 LTS``: same distribution, the
    expected version a prefix of the actual one."""

    def split(text: str) -> tuple[str, list[str]]:
        match = re.search(r"\d+(?:\.\d+)*", text)
        name = (text[: match.start()] if match else text).strip().lower()
        return name, match.group(0).split(".") if match else []

    wanted_name, wanted_version = split(expected)
    found_name, found_version = split(actual)
    same_name = bool(wanted_name) and (found_name.startswith(wanted_name) or wanted_name.startswith(found_name))
    return same_name and found_version[: len(wanted_version)] == wanted_version


def kernel_matches(expected: str, actual: str) -> bool:
    """Same release (``5.4.0-113-generic``); the machine too when the page gives
    one (``5.4.0-148-generic x86_64``)."""
    wanted, found = expected.split(), actual.split()
    if not wanted or not found or wanted[0] != found[0]:
        return False
    return len(wanted) < 2 or (len(found) >= 2 and wanted[1] == found[1])


def _name_key(text: str) -> str:
    return re.sub(r"[^0-9a-z\u4e00-\u9fff]+", "", text.lower())


def names_match(expected: str, actual: str) -> bool:
    """Device and machine names, ignoring case and punctuation, one containing
    the other: ``NVIDIA_A100-SXM4-40GB`` ~ ``NVIDIA A100-SXM4-40GB``,
    ``Iluvatar BI-V100 32GB`` ~ ``Iluvatar BI-V100``, ``昆仑芯AI加速卡R300`` ~ ``R300``."""
    wanted, found = _name_key(expected), _name_key(actual)
    return bool(wanted) and bool(found) and (wanted in found or found in wanted)


def cpu_matches(expected: str, actual: str) -> bool:
    """Same vendor and model numbers: ``AMD EPYC7742-64core@1.5G`` ~ ``AMD EPYC
    7742 64-Core Processor``."""
    if names_match(expected, actual):
        return True
    wanted_numbers = set(re.findall(r"\d{4,}", expected))
    found_numbers = set(re.findall(r"\d{4,}", actual))
    vendors = ("amd", "intel", "arm", "hygon", "kunpeng", "phytium")
    wanted_vendor = next((vendor for vendor in vendors if vendor in expected.lower()), None)
    vendor_ok = wanted_vendor is None or wanted_vendor in actual.lower()
    return bool(wanted_numbers) and wanted_numbers <= found_numbers and vendor_ok


def _rate_gbps(text: str) -> float | None:
    match = re.search(r"(\d+(?:\.\d+)?)\s*G", text, re.IGNORECASE)
    return float(match.group(1)) if match else None


# dependency name on a page -> FrameworkVersions field
DEPENDENCY_FIELDS = {
    "cuda": "cuda",
    "torch": "torch",
    "pytorch": "torch",
    "torchvision": "torchvision",
    "cudnn": "cudnn",
    "nccl": "nccl",
    "python": "python",
}


def _row(field: str, expected: Any, actual: str, matches: bool | None) -> DriftRow:
    return DriftRow(field=field, expected=str(expected), actual=actual, matches=matches)


def _known(value: str) -> bool:
    return bool(value) and value != UNKNOWN


def drift(expected: dict[str, Any], actual: EnvironmentInfo) -> list[DriftRow]:
    """Compare a page's environment (``vendor_page.env_spec_from_page``) with a
    captured one, field by field, with the normalisation each field needs."""
    rows: list[DriftRow] = []

    def compare(field: str, actual_value: str, check: Any) -> None:
        wanted = expected.get(field)
        if not wanted:
            return
        if not _known(actual_value):
            rows.append(_row(field, wanted, actual_value or UNKNOWN, False))
            return
        rows.append(_row(field, wanted, actual_value, bool(check(str(wanted), actual_value))))

    compare("machine_model", actual.machine_model, names_match)
    compare("accelerator_model", actual.accelerator_model, names_match)
    memory = expected.get("device_memory_gib")
    if memory:
        if actual.accelerator_memory_mib is None:
            rows.append(_row("device_memory_gib", memory, UNKNOWN, False))
        else:
            found = actual.accelerator_memory_mib / 1024
            rows.append(_row("device_memory_gib", memory, f"{found:.1f}", abs(found - float(memory)) <= 0.05 * float(memory)))
    compare("cpu_model", actual.cpu_model, cpu_matches)
    compare("network_type", actual.network_type, lambda wanted, found: wanted.lower() in found.lower() or found.lower() in wanted.lower())
    compare("network_rate", actual.network_rate, lambda wanted, found: _rate_gbps(wanted) == _rate_gbps(found))
    compare("os", actual.os, os_matches)
    compare("kernel", actual.kernel, kernel_matches)
    compare("driver", actual.accelerator_driver, version_matches)
    compare("docker_version", actual.docker_version, version_matches)
    if expected.get("docker_image"):
        rows.append(_row("docker_image", expected["docker_image"], "not probed (the harness builds its own image)", None))

    framework = expected.get("framework")
    if framework:
        name, version = split_package_version(str(framework))
        if version is not None and name in ("", *TORCH_NAMES):
            compare("framework", actual.framework.torch, lambda wanted, found: version_matches(version, found))
        else:
            rows.append(_row("framework", framework, f"not probed (only torch is; torch {actual.framework.torch})", None))

    for dependency, wanted in (expected.get("dependencies") or {}).items():
        field = DEPENDENCY_FIELDS.get(dependency.lower())
        label = f"dependencies.{dependency}"
        if field is None:
            rows.append(_row(label, wanted or "(any)", "not probed", None))
            continue
        found = getattr(actual.framework, field)
        if not wanted:
            rows.append(_row(label, "(any)", found, _known(found)))
        elif not _known(found):
            rows.append(_row(label, wanted, found, False))
        else:
            rows.append(_row(label, wanted, found, version_matches(split_package_version(wanted)[1] or wanted, found)))
    return rows


MATCH_MARKS = {True: "✓", False: "✗", None: "?"}


def render_drift_table(rows: list[DriftRow], title: str | None = None) -> Table:
    table = Table(title=title)
    table.add_column("field")
    table.add_column("expected (page)")
    table.add_column("actual (host)")
    table.add_column("match", justify="center")
    for row in rows:
        style = None if row.matches else ("red" if row.matches is False else "yellow")
        table.add_row(row.field, row.expected, row.actual, MATCH_MARKS[row.matches], style=style)
    return table


def drift_text(rows: list[DriftRow], title: str | None = None, width: int = 140) -> str:
    """The drift table as plain text, for logs and reports."""
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(render_drift_table(rows, title))
    return console.export_text()
