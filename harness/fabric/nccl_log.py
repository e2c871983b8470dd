"""What NCCL chose, read from a rank's log (``NCCL_DEBUG=INFO``,
``NCCL_DEBUG_SUBSYS=INIT,NET``), and the rule that turns a silent fallback
to sockets on an InfiniBand fabric into a problem.

The lines it reads (recorded examples: tests/fixtures/nccl/, SOURCES.md there):

- ``NCCL INFO Using network IB`` (``IBext``, ``IBext_v8`` for the SHARP/HPC-X
  plugin, ``Socket``); NCCL 2.3 wrote ``Using internal Network IB``.
- ``NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/RoCE [RO]; OOB ib0:10.0.0.1<0>``,
  NIC fusion as ``[0]={[0] mlx5_2:1/RoCE, [1] mlx5_3:1/RoCE}``, and no device at
  all as ``NET/IB : Using [RO]; OOB ...``; NCCL 2.3: ``NET/IB: [0] mlx5_1:1/IB``.
- ``NCCL INFO NET/Socket : Using [0]eth0:10.0.0.1<0> [1]ib0:192.168.1.15<0>``.
- channel set-up: ``Channel 00/0 : 0[0] -> 8[0] [send] via NET/IB/0/GDRDMA`` (the
  number indexes the device list above; ``GDRDMA``: GPU Direct RDMA), older
  ``Ring 00 : 1 -> 0 [receive] via NET/IB/0``.
- ``NET/IB : No device found.``, ``Failed to open libibverbs.so[.1]``, ``GPU
  Direct RDMA Disabled for HCA 0 'mlx5_0' (no module)``: why a fallback happened.

The verdict, in order: the ``Using network`` lines; else the networks the
channels went through; else the device lists (IB devices listed -> IB, only
socket interfaces -> Socket). Several networks in one text (a node's ranks
together) report the worst: any socket means ``socket``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from harness.fabric.model import Fabric

LIBRARY = "NCCL"

_USING_NETWORK = re.compile(r"NCCL INFO Using (?:internal )?[Nn]etwork (?P<name>\S+)")
_NET_USING = re.compile(r"NCCL INFO NET/(?P<net>IB|Socket)\s*: Using (?P<rest>.*)$")
_OLD_IB_DEVICE = re.compile(r"NCCL INFO NET/IB\s*: \[(?P<index>\d+)\] (?P<spec>\S+)")
_CHANNEL = re.compile(r"via NET/(?P<net>[A-Za-z][\w.-]*)/(?P<index>\d+)(?P<flags>(?:/[A-Za-z]+)*)")
_VERSION = re.compile(r"NCCL version (?P<version>\d[\w.+-]*)")
_GDR_STATE = re.compile(r"GPU Direct RDMA (?P<state>Enabled|Disabled) for HCA")
# one top-level entry of an IB device list: "[0]mlx5_0:1/IB" or "[0]={[0] mlx5_2:1/RoCE, [1] ...}"
_IB_ENTRY = re.compile(r"\[(?P<index>\d+)\](?:=\{(?P<fused>[^}]*)\}|(?P<single>[^\s\[;]+))")
_FUSED_PART = re.compile(r"\[\d+\]\s*(?P<spec>[^,\s}]+)")
_SOCKET_ENTRY = re.compile(r"\[(?P<index>\d+)\](?P<name>[^:\s\[]+):(?P<address>\S+)")
# lines that explain a fallback; kept verbatim (message part) in the report
_NOTES = (
    re.compile(r"NET/IB\s*: No device found\.?"),
    re.compile(r"Failed to open libibverbs\.so\S*"),
    re.compile(r"NCCL_IB_DISABLE set by environment to \d+\.?"),
    re.compile(r"NCCL_NET set by environment to \S+"),
)


@dataclass(frozen=True)
class NetDevice:
    """One device of a network's list: an HCA port (``mlx5_0:1``), several fused
    ones, or a socket interface (``eth0``)."""

    index: int
    ports: tuple[str, ...]
    link: str  # IB, RoCE (first tag after the port) or Socket
    address: str | None = None  # socket interfaces: the IP NCCL printed

    @property
    def label(self) -> str:
        return "+".join(self.ports)


@dataclass(frozen=True)
class TransportReport:
    """What the library chose, from one log text (a rank, or a node's ranks together)."""

    library: str
    version: str | None
    networks: tuple[str, ...]  # as printed: IB, IBext_v8, Socket
    transport: str | None  # ib | roce | socket | another network's name in lower case; None: nothing found
    devices: tuple[NetDevice, ...]  # the chosen network's device list
    devices_used: tuple[str, ...]  # labels of the devices the channels went through
    gdr: bool | None  # GPU Direct RDMA on the channels; None: no network channel seen
    notes: tuple[str, ...]  # lines that explain a fallback

    @property
    def known(self) -> bool:
        return self.transport is not None

    def describe(self) -> str:
        """One line for the record: ``ib (mlx5_0:1, mlx5_1:1), GPU Direct RDMA on, NCCL 2.19.3``."""
        if self.transport is None:
            return f"unknown (no {self.library} network lines in the log)"
        shown = self.devices_used or tuple(d.label for d in self.devices)
        parts = [self.transport + (f" ({', '.join(shown)})" if shown else "")]
        if self.gdr is not None:
            parts.append(f"GPU Direct RDMA {'on' if self.gdr else 'off'}")
        if self.version:
            parts.append(f"{self.library} {self.version}")
        return ", ".join(parts)


def _message(line: str) -> str:
    """The part of a log line after ``NCCL INFO `` (host:pid:tid [dev] prefixes dropped)."""
    _, sep, rest = line.partition("NCCL INFO ")
    return rest.strip() if sep else line.strip()


def _ib_devices(rest: str) -> list[NetDevice]:
    listed = rest.split(";", 1)[0]
    devices: list[NetDevice] = []
    for match in _IB_ENTRY.finditer(listed):
        specs = ([m.group("spec") for m in _FUSED_PART.finditer(match.group("fused"))]
                 if match.group("fused") is not None else [match.group("single")])
        ports = tuple(spec.split("/", 1)[0] for spec in specs)
        tags = [spec.split("/")[1] for spec in specs if "/" in spec]
        devices.append(NetDevice(int(match.group("index")), ports, tags[0] if tags else "IB"))
    return devices


def _socket_devices(rest: str) -> list[NetDevice]:
    return [NetDevice(int(m.group("index")), (m.group("name"),), "Socket", m.group("address").split("<", 1)[0])
            for m in _SOCKET_ENTRY.finditer(rest)]


def _merge(into: dict[int, NetDevice], devices: Iterable[NetDevice]) -> None:
    for device in devices:
        into.setdefault(device.index, device)


def _normalise(network: str, devices: Mapping[int, NetDevice], used: Iterable[int]) -> str:
    if network == "Socket":
        return "socket"
    if network.startswith("IB"):  # IB, IBext, IBext_v8: NCCL's verbs transport, InfiniBand or RoCE
        chosen = [devices[i] for i in used if i in devices] or list(devices.values())
        links = {d.link for d in chosen}
        return "roce" if links and links <= {"RoCE"} else "ib"
    return network.lower()


def parse_nccl_log(text: str) -> TransportReport:
    """The transport NCCL reported in `text`; lines of other programs (and ``#``
    comment lines) are ignored."""
    declared: list[str] = []
    ib: dict[int, NetDevice] = {}
    sockets: dict[int, NetDevice] = {}
    channels: list[tuple[str, int, bool]] = []
    notes: list[str] = []
    version: str | None = None
    gdr_states: set[str] = set()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if version is None and (found := _VERSION.search(line)):
            version = found.group("version")
        if "NCCL INFO" not in line:
            continue
        if found := _USING_NETWORK.search(line):
            if found.group("name") not in declared:
                declared.append(found.group("name"))
        elif found := _NET_USING.search(line):
            if found.group("net") == "IB":
                _merge(ib, _ib_devices(found.group("rest")))
            else:
                _merge(sockets, _socket_devices(found.group("rest")))
        elif found := _OLD_IB_DEVICE.search(line):
            spec = found.group("spec")
            _merge(ib, [NetDevice(int(found.group("index")), (spec.split("/", 1)[0],),
                                  spec.split("/")[1] if "/" in spec else "IB")])
        if found := _CHANNEL.search(line):
            channels.append((found.group("net"), int(found.group("index")), "/GDRDMA" in found.group("flags")))
        if found := _GDR_STATE.search(line):
            gdr_states.add(found.group("state"))
        message = _message(line)
        for pattern in _NOTES:
            if (note := pattern.search(message)) and note.group(0) not in notes:
                notes.append(note.group(0))

    networks = list(declared)
    if not networks:
        networks = list(dict.fromkeys(net for net, _, _ in channels))
    if not networks:
        networks = ["IB"] if ib else ["Socket"] if sockets else []

    transports = []
    for network in networks:
        table = sockets if network == "Socket" else ib
        transports.append(_normalise(network, table, [i for net, i, _ in channels if net == network]))
    transport = "socket" if "socket" in transports else (transports[0] if transports else None)

    chosen_net = "Socket" if transport == "socket" else next((n for n in networks if n != "Socket"), None)
    table = sockets if transport == "socket" else ib
    used = list(dict.fromkeys(i for net, i, _ in channels if net == chosen_net))
    net_channels = [gdr for net, _, gdr in channels if net == chosen_net]
    if net_channels:
        gdr: bool | None = any(net_channels)
    elif gdr_states == {"Disabled"}:
        gdr = False
    else:
        gdr = None
    return TransportReport(
        library=LIBRARY,
        version=version,
        networks=tuple(networks),
        transport=transport,
        devices=tuple(table[i] for i in sorted(table)) if transport is not None else (),
        devices_used=tuple(table[i].label if i in table else f"{chosen_net}/{i}" for i in used),
        gdr=gdr,
        notes=tuple(notes),
    )


def node_transport(texts: Iterable[str]) -> TransportReport:
    """One node's verdict from all its rank logs (any rank on sockets: socket)."""
    return parse_nccl_log("\n".join(texts))


def fallback_problem(fabric: Fabric, per_node_transport: Mapping[str, TransportReport]) -> list[str]:
    """One line per node that ran over sockets although the fabric is ``ib``,
    naming the node, what the library used and the log lines that say why. The
    caller fails the run (kind ``infra``) or, with ``fabric.allow_fallback``,
    warns. Nodes whose transport is unknown are not a fallback (see
    `unverified_nodes`)."""
    if fabric.type != "ib":
        return []
    problems: list[str] = []
    for node, report in per_node_transport.items():
        if report.transport != "socket":
            continue
        over = ", ".join(d.label for d in report.devices) or "a TCP interface"
        why = f"; the log says: {' / '.join(report.notes)}" if report.notes else ""
        problems.append(f"{node}: {report.library} fell back to TCP sockets over {over} although the fabric "
                        f"is ib with HCAs {', '.join(fabric.hcas)}{why}")
    return problems


def unverified_nodes(fabric: Fabric, per_node_transport: Mapping[str, TransportReport]) -> list[str]:
    """Nodes of an ``ib`` fabric whose logs name no transport at all (debug
    output missing, or a library whose log is not parsed)."""
    if fabric.type != "ib":
        return []
    return [node for node, report in per_node_transport.items() if report.transport is None]
