"""A fabric (inventory ``cluster.fabric``) + the vendor's collective spec
(``collective:`` in Dockerfiles/<vendor>/vendor.yaml) -> the variables every
container of the run gets. Vendors are data: nothing here knows a library's
name or its variables."""

from __future__ import annotations

from harness.core.vendor import CollectiveSpec
from harness.fabric.model import Fabric


def collective_env(fabric: Fabric, spec: CollectiveSpec | None) -> dict[str, str]:
    """The collective library's variables for this fabric, in a stable order:
    the fabric type's fixed settings, the HCAs, the socket interface, GPU
    Direct RDMA, then the debug variables that make the library print its
    transport choice. Type none, or a vendor without a spec: nothing."""
    if fabric.type == "none" or spec is None:
        return {}
    env: dict[str, str] = dict(spec.type_env.get(fabric.type, {}))
    if fabric.type == "ib" and spec.hcas_env is not None:
        env[spec.hcas_env] = spec.hcas_separator.join(fabric.hcas)
    if fabric.socket_ifname is not None and spec.socket_ifname_env is not None:
        env[spec.socket_ifname_env] = fabric.socket_ifname
    if fabric.gdr:
        env.update(spec.gdr_env)
    env.update(spec.debug_env)
    return env


def unsupported_settings(fabric: Fabric, spec: CollectiveSpec | None, vendor: str) -> list[str]:
    """What the fabric asks for that this vendor's library spec cannot express,
    one line each (the caller decides whether that is bad input): silently
    dropping an HCA list would run over whatever the library picks."""
    if fabric.type == "none":
        return []
    if spec is None:
        return [f"vendor {vendor} has no collective: section in its vendor.yaml, so fabric type {fabric.type} "
                "cannot be applied"]
    problems: list[str] = []
    if fabric.type == "ib" and spec.hcas_env is None:
        problems.append(f"vendor {vendor}'s collective library {spec.library} has no variable for hcas "
                        f"{', '.join(fabric.hcas)} (collective.hcas_env)")
    if fabric.socket_ifname is not None and spec.socket_ifname_env is None:
        problems.append(f"vendor {vendor}'s collective library {spec.library} has no variable for "
                        f"socket_ifname {fabric.socket_ifname} (collective.socket_ifname_env)")
    if fabric.gdr and not spec.gdr_env:
        problems.append(f"vendor {vendor}'s collective library {spec.library} has no setting for gdr "
                        "(collective.gdr_env)")
    return problems
