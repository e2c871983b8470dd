"""The image on every host of a run, with the same id: built on the first node,
copied (`docker save` -> the controller -> `docker load`) to hosts whose engine lacks it.
Every docker command is the request's (harness/backends/docker_request.py ImageCommands).

Each run builds in a context folder of its own (content hash + run id), removed
whether the build succeeds or not, so two runs on one host never share one.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.backends.docker_request import DockerNode
from harness.backends.image import write_context
from harness.backends.transport import Transport, remove_tree_argv
from harness.core.plan import ImagePlan
from harness.errors import HarnessError, HostFault, HostUnreachable, RemoteCommandError, RunFailed
from harness.parallel import run_all

QUICK_S = 30.0
BUILD_S = 3 * 3600.0
TRANSFER_S = 3600.0
_IMAGE_ID_RE = re.compile(r"sha256:[0-9a-f]{64}")

TransportFor = Callable[[DockerNode], Transport]


def image_id(transport: Transport, entry: DockerNode) -> str | None:
    result = transport.run(entry.image.check, timeout=QUICK_S)
    match = _IMAGE_ID_RE.search(result.output) if result.ok else None
    return match.group(0) if match else None


def build(transport: Transport, entry: DockerNode, image: ImagePlan) -> None:
    context_remote = entry.image.build_context
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ctx-") as tmp:
            context = write_context(image, Path(tmp) / "context")
            transport.put_tree(context, context_remote)
        transport.run(entry.image.build, timeout=BUILD_S).check()
    finally:
        transport.run(remove_tree_argv(context_remote), timeout=QUICK_S)


def _copy_failed(what: str, failed: dict[str, str]) -> HostFault:
    """The copy failed on these hosts (BENCH-I01 each); a host that stopped answering stays HostUnreachable."""
    lines = "; ".join(f"{host}: {reason.strip().splitlines()[0][:300] if reason.strip() else '?'}"
                      for host, reason in failed.items())
    return HostFault(f"{what} failed on {', '.join(failed)}: {lines}", list(failed), "BENCH-I01")


def copy_image(transport_for: TransportFor, source: DockerNode, targets: list[DockerNode], tag: str) -> None:
    """docker save once on the source host, through the controller, docker load on every target.
    A folder of its own per tag and node (hosts may share a disk): put_tree replaces
    it whole, get_tree fetches only it. A save or load that fails is a HostFault naming its hosts."""
    src = transport_for(source)
    source_name = source.node.host.name
    src.run(["mkdir", "-p", source.image.image_folder], timeout=QUICK_S).check()
    try:
        try:
            src.run(source.image.save, timeout=TRANSFER_S).check()
        except RemoteCommandError as exc:
            raise _copy_failed(f"docker save of {tag}", {source_name: exc.output}) from exc
        with tempfile.TemporaryDirectory(prefix="bench-img-") as tmp:
            got = src.get_tree(source.image.image_folder, Path(tmp))
            if [p.name for p in got] != ["image.tar"]:
                raise _copy_failed(f"docker save of {tag}", {source_name: "it produced no file"})

            def load(target: DockerNode) -> str | None:
                """None when loaded, else why not."""
                transport = transport_for(target)
                try:
                    transport.put_tree(Path(tmp), target.image.image_folder)
                    transport.run(target.image.load, timeout=TRANSFER_S).check()
                    return None
                except HostUnreachable:
                    raise
                except RemoteCommandError as exc:
                    return exc.output or str(exc)
                except (HarnessError, OSError) as exc:
                    return str(exc)
                finally:
                    transport.run(remove_tree_argv(target.image.image_folder), timeout=QUICK_S)

            failed = {t.node.host.name: why for t, why in zip(targets, run_all(load, targets)) if why is not None}
            if failed:
                raise _copy_failed(f"copying {tag} (docker load)", failed)
    finally:
        src.run(remove_tree_argv(source.image.image_folder), timeout=QUICK_S)


def prepare_image(transport_for: TransportFor, entries: list[DockerNode], image: ImagePlan) -> str:
    """The image's id, the same on every node's engine (built or copied as needed)."""
    tag = image.tag
    first = entries[0]
    ids = run_all(lambda entry: image_id(transport_for(entry), entry), entries)
    if ids[0] is None:
        build(transport_for(first), first, image)
        ids = run_all(lambda entry: image_id(transport_for(entry), entry), entries)  # hosts may share an engine
    reference = ids[0]
    if reference is None:
        raise RunFailed(f"image {tag} is missing on {first.node.host.name} right after its build")
    lacking = [entry for entry, found in zip(entries, ids) if found != reference]
    if lacking:
        copy_image(transport_for, first, lacking, tag)
        copied = run_all(lambda entry: image_id(transport_for(entry), entry), lacking)
        differing = [e.node.host.name for e, i in zip(lacking, copied) if i != reference]
        if differing:
            raise HostFault(f"image {tag} has a different id on {', '.join(differing)} than on "
                            f"{first.node.host.name} ({reference}) after the copy", differing, "BENCH-I01")
    return reference
