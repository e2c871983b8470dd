"""The campaign's one backend: DockerSshBackend with its SSH connections kept
from job to job, each host's environment captured once and each image made
present on a set of hosts once. After a failed attempt the campaign calls
``forget()``: a host that failed may have changed (rebooted, new driver,
images pruned), so the next attempt captures and checks again."""

from __future__ import annotations

from harness.backends.docker import DockerSshBackend
from harness.backends.registry import make_backend
from harness.core.inventory import Host, Inventory
from harness.core.plan import RunPlan
from harness.errors import UserError
from harness.hostinfo.model import EnvironmentInfo


class CampaignBackend(DockerSshBackend):
    def __init__(self, inventory: Inventory) -> None:
        super().__init__(inventory)
        self._environments: dict[tuple[str, str | None], EnvironmentInfo] = {}
        self._images: dict[tuple[str, tuple[str, ...]], str] = {}

    def capture_hosts(self, hosts: list[Host], smi: str | None) -> dict[str, EnvironmentInfo]:
        missing = [host for host in hosts if (host.name, smi) not in self._environments]
        if missing:
            for name, info in super().capture_hosts(missing, smi).items():
                self._environments[(name, smi)] = info
        # Copies: the runner completes each run's record with what its containers reported.
        return {host.name: self._environments[(host.name, smi)].model_copy(deep=True) for host in hosts}

    def prepare_image(self, plan: RunPlan) -> str:
        key = (plan.image.tag, tuple(node.host.name for node in plan.nodes))
        if key not in self._images:
            self._images[key] = super().prepare_image(plan)
        return self._images[key]

    def forget(self) -> None:
        """Capture environments and check images again from the next run on."""
        self._environments.clear()
        self._images.clear()


def campaign_backend(inventory: Inventory) -> DockerSshBackend:
    """The backend a campaign runs its jobs through: the cached SSH one for a host
    list, the registry's own otherwise (a scheduler hands out fresh nodes per job)."""
    backend = make_backend(inventory)
    if backend.uses_host_list:
        backend.close()
        return CampaignBackend(inventory)
    if not isinstance(backend, DockerSshBackend):
        raise UserError(f"campaigns cannot run on the {inventory.cluster.backend} backend yet",
                        file=inventory.source, field="cluster.backend")
    return backend
