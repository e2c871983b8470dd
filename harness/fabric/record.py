"""After a run, for its record: what each node's collective library chose
(read from the node's collected rank logs), the fallback rule applied to it,
and a bandwidth case's table as results.json holds it.

The rank logs are the training processes' own output as torchrun kept it
(``container/torchrun/**/stdout.log``, ``stderr.log``); a node without them
is read from its ``container.log`` (the same lines, teed). Which parser reads
them is the vendor's data (``collective.transport_log``); a library without one
is recorded as unknown, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.events import Event
from harness.core.results import Bandwidth, BandwidthRow, FailureKind, NodeOutcome, NodeTransport
from harness.core.vendor import CollectiveSpec
from harness.fabric.busbw import BandwidthRow as TableRow
from harness.fabric.busbw import BandwidthTable, bandwidth_table
from harness.fabric.model import Fabric
from harness.fabric.nccl_log import TransportReport, fallback_problem, node_transport, unverified_nodes

RANK_LOG_NAMES = ("stdout.log", "stderr.log")
CONTAINER_LOG = "container.log"
MAX_LOG_BYTES = 64 * 2**20  # per file: the debug lines come first, a long run's tail is not needed


def node_log_texts(folder: Path) -> list[str]:
    """The texts of one collected node's rank logs (or its container log)."""
    files = sorted(p for name in RANK_LOG_NAMES for p in folder.rglob(name) if p.is_file())
    if not files and (folder / CONTAINER_LOG).is_file():
        files = [folder / CONTAINER_LOG]
    texts = []
    for path in files:
        with path.open("rb") as handle:
            texts.append(handle.read(MAX_LOG_BYTES).decode("utf-8", "replace"))
    return texts


def _node_label(node: NodeOutcome) -> str:
    return f"node {node.node_rank} ({node.host})"


def transport_record(report: TransportReport) -> NodeTransport:
    return NodeTransport(library=report.library, transport=report.transport, networks=list(report.networks),
                         devices=list(report.devices_used or tuple(d.label for d in report.devices)),
                         gdr=report.gdr, version=report.version, notes=list(report.notes),
                         summary=report.describe())


@dataclass(frozen=True)
class FabricVerdict:
    transports: dict[int, NodeTransport] = field(default_factory=dict)  # node rank -> what its library chose
    failure: str | None = None  # a fallback on an ib fabric: the run failed (infra)
    warnings: list[str] = field(default_factory=list)

    def judge(self, failure: str | None, kind: FailureKind | None) -> tuple[str | None, FailureKind | None, list[str]]:
        """(failure, kind, warnings) of the run once the fabric is taken into account:
        a fallback fails a run that otherwise succeeded (infra); on a run that failed
        anyway it is one more warning, the first failure staying the root cause."""
        if self.failure is None:
            return failure, kind, list(self.warnings)
        if failure is None:
            return self.failure, "infra", list(self.warnings)
        return failure, kind, [*self.warnings, self.failure]


def fabric_verdict(fabric: Fabric, spec: CollectiveSpec | None, nodes: list[NodeOutcome]) -> FabricVerdict:
    """Every collected node's transport, and what the fabric makes of it: a node
    on sockets although the fabric is ib fails the run, or with allow_fallback
    is a warning; an ib node whose logs say nothing is a warning."""
    if fabric.type == "none" or spec is None:
        return FabricVerdict()
    collected = [node for node in nodes if Path(node.log_dir).is_dir()]
    if spec.transport_log is None:
        unknown = NodeTransport(library=spec.library,
                                summary=f"unknown (the harness does not read {spec.library}'s log)")
        warnings = ([f"the transport {spec.library} chose on the ib fabric is not verified: the harness does "
                     f"not read its log (collective.transport_log)"] if fabric.type == "ib" and collected else [])
        return FabricVerdict({node.node_rank: unknown for node in collected}, None, warnings)
    reports: Mapping[str, TransportReport] = {
        _node_label(node): node_transport(node_log_texts(Path(node.log_dir))) for node in collected}
    transports = {node.node_rank: transport_record(reports[_node_label(node)]) for node in collected}
    warnings = [f"{label}: no {spec.library} network lines in its logs, the transport on the ib fabric is not "
                "verified" for label in unverified_nodes(fabric, reports)]
    problems = fallback_problem(fabric, reports)
    if problems and not fabric.allow_fallback:
        return FabricVerdict(transports, "fabric fallback: " + "; ".join(problems), warnings)
    warnings += [f"{problem} (allowed: cluster.fabric.allow_fallback)" for problem in problems]
    return FabricVerdict(transports, None, warnings)


def with_transports(nodes: list[NodeOutcome], transports: Mapping[int, NodeTransport]) -> list[NodeOutcome]:
    return [node.model_copy(update={"transport": transports[node.node_rank]}) if node.node_rank in transports
            else node for node in nodes]


def bandwidth_result(by_rank: Mapping[int, list[Event]]) -> Bandwidth | None:
    """The bandwidth events of a run as results.json holds them; None without any."""
    table = bandwidth_table(by_rank)
    if table is None:
        return None
    rows = [BandwidthRow(size_bytes=r.size_bytes, count=r.count, dtype=r.dtype, time_us=r.time_us,
                         algbw_gbps=r.algbw_gbps, busbw_gbps=r.busbw_gbps, iters=r.iters, check=r.check)
            for r in table.rows]
    return Bandwidth(op=table.op, world_size=table.world_size, rows=rows, avg_busbw_gbps=table.avg_busbw_gbps,
                     peak_busbw_gbps=table.peak_busbw_gbps)


def bandwidth_table_of(result: Bandwidth) -> BandwidthTable:
    """The recorded table back as busbw.py renders it."""
    rows = tuple(TableRow(size_bytes=r.size_bytes, count=r.count, dtype=r.dtype, time_us=r.time_us,
                          algbw_gbps=r.algbw_gbps, busbw_gbps=r.busbw_gbps, iters=r.iters, check=r.check)
                 for r in result.rows)
    return BandwidthTable(op=result.op, world_size=result.world_size, rank=0, rows=rows)
