"""``cluster.fabric`` in hosts.yaml: what the nodes talk over.

    cluster:
      fabric: {type: ib, hcas: [mlx5_0, mlx5_1], socket_ifname: ib0, gdr: true}

- ``type``: ``ib`` (RDMA through the named HCAs; RoCE HCAs count: the
  collective libraries drive them through the same verbs transport),
  ``ethernet`` (TCP sockets on ``socket_ifname``) or ``none`` (nothing set,
  the library's defaults; the default).
- ``hcas``: HCA names as ``ibstat`` lists them, optionally with a port
  (``mlx5_0:1``); required for ``ib``, refused otherwise.
- ``socket_ifname``: the IP interface for bootstrap / socket traffic.
- ``gdr``: ask for GPU Direct RDMA (only with ``ib``); false leaves the
  library's own choice.
- ``allow_fallback``: a node whose library fell back to sockets on an ``ib``
  fabric is a warning instead of a failed run (``infra``).
- ``link_gbps``: the line rate of each HCA in Gb/s (100 EDR, 200 HDR, 400 NDR;
  ``ibstat``'s Rate), only with ``ib``: the all-reduce case's % of expected
  busbw across nodes is this rate's per-HCA figure x the HCAs (harness/expect/).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FabricType = Literal["ib", "ethernet", "none"]

# mlx5_0, mlx5_bond_0, rocep204s0f0v6, bnxt_re0, optionally ":<port>"
HCA_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*(?::[1-9][0-9]*)?$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


class Fabric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FabricType = "none"
    hcas: list[str] = Field(default_factory=list)
    socket_ifname: str | None = None
    gdr: bool = False
    allow_fallback: bool = False
    link_gbps: int | None = Field(default=None, gt=0)

    @field_validator("hcas")
    @classmethod
    def _hca_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not isinstance(name, str) or not HCA_RE.match(name):
                raise ValueError(f"{name!r} is not an HCA name such as mlx5_0 or mlx5_0:1 "
                                 "(as ibstat lists it, optionally :port)")
        if len(set(value)) != len(value):
            raise ValueError("an HCA is listed twice")
        return value

    @field_validator("socket_ifname")
    @classmethod
    def _ifname(cls, value: str | None) -> str | None:
        if value is not None and not IFNAME_RE.match(value):
            raise ValueError(f"{value!r} is not a network interface name such as ib0 or eth0 "
                             "(at most 15 characters, no spaces or commas)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Fabric":
        if self.type == "ib" and not self.hcas:
            raise ValueError("type ib needs hcas: the HCAs to use, e.g. [mlx5_0, mlx5_1] (ibstat lists them)")
        if self.type != "ib" and self.hcas:
            raise ValueError(f"hcas are only used with type ib, this fabric is type {self.type}")
        if self.type != "ib" and self.gdr:
            raise ValueError(f"gdr (GPU Direct RDMA) needs type ib, this fabric is type {self.type}")
        if self.type != "ib" and self.link_gbps is not None:
            raise ValueError(f"link_gbps (the HCAs' line rate) needs type ib, this fabric is type {self.type}")
        if self.type == "none" and self.socket_ifname is not None:
            raise ValueError("socket_ifname needs type ib or ethernet; type none leaves every setting to the library")
        return self

    def hca_ports(self) -> list[tuple[str, int | None]]:
        """(HCA, port or None) for each entry of hcas: ``mlx5_0:1`` -> (mlx5_0, 1)."""
        pairs: list[tuple[str, int | None]] = []
        for entry in self.hcas:
            name, _, port = entry.partition(":")
            pairs.append((name, int(port) if port else None))
        return pairs


# Docker's --device takes a folder and passes every device node below it
# (rdma_cm, uverbs<N>, umad<N>, issm<N>).
RDMA_DEVICE_DIR = "/dev/infiniband"


def docker_run_args(fabric: Fabric) -> list[str]:
    """The ``docker run`` flags a fabric needs: with type ib the RDMA device nodes,
    IPC_LOCK (the verbs library pins memory) and an unlimited memlock limit;
    nothing for the other types."""
    if fabric.type != "ib":
        return []
    return ["--device", RDMA_DEVICE_DIR, "--cap-add", "IPC_LOCK", "--ulimit", "memlock=-1:-1"]
