"""Comparing captured environments: across the hosts of one run
(``differences``), and with the environment a vendor page declares (``drift``,
with the normalisation rule each field needs).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from harness.hostinfo.model import UNKNOWN, EnvironmentInfo


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
    """Compare a page's environment (``env_spec_from_page`` in harness/pages/) with a
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


# DriftRow.matches as one mark: match, mismatch, not checked.
MATCH_MARKS = {True: "✓", False: "✗", None: "?"}
