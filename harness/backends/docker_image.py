"""The image on every host of a run, with the same id: built on the first node,
copied (`docker save` -> the controller -> `docker load`) to hosts whose engine lacks it.

Each run builds in a context folder of its own (content hash + run id), removed
whether the build succeeds or not, so two runs on one host never share one.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.backends.image import ImagePlan, write_context
from harness.backends.launch import LABEL_PREFIX, NodePlan
from harness.backends.transport import Transport
from harness.errors import RunFailed
from harness.parallel import run_all

QUICK_S = 30.0
BUILD_S = 3 * 3600.0
TRANSFER_S = 3600.0
_IMAGE_ID_RE = re.compile(r"sha256:[0-9a-f]{64}")

TransportFor = Callable[[NodePlan], Transport]


def image_id(transport: Transport, node: NodePlan, tag: str) -> str | None:
    result = transport.run([*node.docker, "image", "inspect", "--format", "{{.Id}}", tag], timeout=QUICK_S)
    match = _IMAGE_ID_RE.search(result.output) if result.ok else None
    return match.group(0) if match else None


def build_argv(node: NodePlan, image: ImagePlan, context: str) -> list[str]:
    return [*node.docker, "build", "--tag", image.tag,
            "--label", f"{LABEL_PREFIX}content_hash={image.content_hash}", context]


def build_context_dir(node: NodePlan, image: ImagePlan, run_id: str) -> str:
    return f"{node.host.work_dir}/build/{image.content_hash[:16]}-{run_id}"


def build(transport: Transport, node: NodePlan, image: ImagePlan, run_id: str) -> None:
    context_remote = build_context_dir(node, image, run_id)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ctx-") as tmp:
            context = write_context(image, Path(tmp) / "context")
            transport.put_tree(context, context_remote)
        transport.run(build_argv(node, image, context_remote), timeout=BUILD_S).check()
    finally:
        transport.run(["rm", "-rf", "--", context_remote], timeout=QUICK_S)


def copy_image(transport_for: TransportFor, source: NodePlan, targets: list[NodePlan], tag: str) -> None:
    """docker save once on the source host, through the controller, docker load on every target."""
    name = tag.replace("/", "_").replace(":", "_")

    # A folder of its own per tag and node (hosts may share a disk): put_tree
    # replaces it whole, get_tree fetches only it.
    def folder(node: NodePlan) -> str:
        return f"{node.host.work_dir}/images/{name}-n{node.node_rank}"

    src = transport_for(source)
    src.run(["mkdir", "-p", folder(source)], timeout=QUICK_S).check()
    try:
        src.run([*source.docker, "save", "--output", f"{folder(source)}/image.tar", tag], timeout=TRANSFER_S).check()
        with tempfile.TemporaryDirectory(prefix="bench-img-") as tmp:
            got = src.get_tree(folder(source), Path(tmp))
            if [p.name for p in got] != ["image.tar"]:
                raise RunFailed(f"docker save of {tag} on {source.host.name} produced no file")

            def load(target: NodePlan) -> None:
                transport = transport_for(target)
                try:
                    transport.put_tree(Path(tmp), folder(target))
                    transport.run([*target.docker, "load", "--input", f"{folder(target)}/image.tar"],
                                  timeout=TRANSFER_S).check()
                finally:
                    transport.run(["rm", "-rf", "--", folder(target)], timeout=QUICK_S)

            run_all(load, targets)
    finally:
        src.run(["rm", "-rf", "--", folder(source)], timeout=QUICK_S)


def prepare_image(transport_for: TransportFor, nodes: list[NodePlan], image: ImagePlan, run_id: str) -> str:
    """The image's id, the same on every node's engine (built or copied as needed)."""
    tag = image.tag
    first = nodes[0]
    ids = run_all(lambda node: image_id(transport_for(node), node, tag), nodes)
    if ids[0] is None:
        build(transport_for(first), first, image, run_id)
        ids = run_all(lambda node: image_id(transport_for(node), node, tag), nodes)  # hosts may share an engine
    reference = ids[0]
    if reference is None:
        raise RunFailed(f"image {tag} is missing on {first.host.name} right after its build")
    lacking = [node for node, found in zip(nodes, ids) if found != reference]
    if lacking:
        copy_image(transport_for, first, lacking, tag)
        copied = run_all(lambda node: image_id(transport_for(node), node, tag), lacking)
        differing = [n.host.name for n, i in zip(lacking, copied) if i != reference]
        if differing:
            raise RunFailed(f"image {tag} has a different id on {', '.join(differing)} than on "
                            f"{first.host.name} ({reference})")
    return reference
