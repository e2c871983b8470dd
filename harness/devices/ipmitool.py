"""Whole-system power from the BMC: ``ipmitool dcmi power reading``.

Recorded outputs: tests/fixtures/smi/ipmitool_dcmi_power_*.txt.
"""

from __future__ import annotations

import re

IPMI_POWER_ARGV = ("ipmitool", "dcmi", "power", "reading")

_IPMI_POWER = re.compile(r"Instantaneous power reading:\s*(?P<watts>\d+(?:\.\d+)?)\s*Watts", re.IGNORECASE)
_IPMI_STATE = re.compile(r"Power reading state is:\s*(?P<state>\w+)", re.IGNORECASE)


def parse_ipmitool_power(text: str) -> float | None:
    """Watts from ``ipmitool dcmi power reading``; None when absent, or when a
    BMC with the reading deactivated reports 0."""
    match = _IPMI_POWER.search(text)
    if match is None:
        return None
    watts = float(match.group("watts"))
    state = _IPMI_STATE.search(text)
    if watts == 0 and state is not None and state.group("state").lower() == "deactivated":
        return None
    return watts
