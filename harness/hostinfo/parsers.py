"""Parsers of what the host tools print, for the environment capture
(probes.py): /etc/os-release, /proc/cpuinfo, lscpu, ibstat, ibv_devinfo, the
NIC speeds under /sys/class/net, and the framework probe's JSON line.

Recorded ibstat output: tests/fixtures/smi/ibstat_mlx5_active_200.txt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from harness.hostinfo.model import FRAMEWORK_FIELDS, FrameworkVersions


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


@dataclass(frozen=True)
class IbstatPort:
    """One port of one CA in ``ibstat`` output."""

    ca: str
    port: int
    state: str  # Active, Down, Initializing, ...
    physical_state: str  # LinkUp, Disabled, Polling, ...
    rate: float | None  # Gb/s
    link_layer: str  # InfiniBand or Ethernet (RoCE)


@dataclass(frozen=True)
class IbstatReport:
    """Every CA ``ibstat`` listed (with its ports), and the devices it said it
    could not find (``ibpanic: ... stat of IB device 'mlx5_8' failed``)."""

    cas: dict[str, list[IbstatPort]]
    missing: list[str]


def parse_ibstat_ports(text: str) -> IbstatReport:
    """Every CA and port of ``ibstat`` output (the fabric preflight's view)."""
    cas: dict[str, list[IbstatPort]] = {}
    missing: list[str] = []
    ca: str | None = None
    fields: dict[str, str] | None = None
    number = 0

    def close() -> None:
        if ca is not None and fields is not None:
            try:
                rate: float | None = float(fields.get("Rate", ""))
            except ValueError:
                rate = None
            cas[ca].append(IbstatPort(ca, number, fields.get("State", ""), fields.get("Physical state", ""),
                                      rate, fields.get("Link layer", "InfiniBand")))

    for line in text.splitlines():
        stripped = line.strip()
        if (found := re.match(r"^CA '([^']+)'$", stripped)) is not None:
            close()
            ca, fields = found.group(1), None
            cas.setdefault(ca, [])
        elif (found := re.match(r"^Port (\d+):$", stripped)) is not None and ca is not None:
            close()
            fields, number = {}, int(found.group(1))
        elif (found := re.search(r"stat of IB device '([^']+)' failed", stripped)) is not None:
            missing.append(found.group(1))
        elif fields is not None and ":" in stripped:
            name, _, value = stripped.partition(":")
            fields[name.strip()] = value.strip()
    close()
    return IbstatReport(cas, missing)


def parse_ibstat(text: str) -> tuple[str, str] | None:
    """(link layer, rate) of the fastest Active port in ``ibstat`` output, e.g.
    ("InfiniBand", "200Gb/s"); None when no port is Active."""
    active = [port for ports in parse_ibstat_ports(text).cas.values() for port in ports
              if port.state.lower() == "active" and port.rate is not None]
    if not active:
        return None
    best = max(active, key=lambda port: port.rate or 0.0)
    return best.link_layer, f"{best.rate:g}Gb/s"


def parse_ibv_devinfo(text: str) -> tuple[str, str] | None:
    """(link layer, rate) of the fastest PORT_ACTIVE port in ``ibv_devinfo``:
    rate = active_width (4X) x active_speed (50.0 Gbps)."""
    best: tuple[float, str] | None = None
    state = layer = ""
    width: float | None = None
    speed: float | None = None

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


def parse_framework_probe(output: str) -> FrameworkVersions:
    """The JSON line probes.PYTHON_PROBE prints -> versions, with a reason for each
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
