"""Bringing one node's logs back from its host, losing nothing that can be had.

What the harness writes itself (container.json, container.log, monitor.csv) sits
in the node's folder; what the container wrote sits below `container/`, so a
container file can never overwrite ours. docker logs is streamed to the file as
it comes and, when it does not finish in time, kept and marked partial. A file
that cannot be fetched is noted and the rest still come back.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.backends.payload import NODE_LOG, NodeCollected, last_lines
from harness.backends.transport import CommandResult, FetchedFiles, Transport
from harness.errors import HarnessError
from harness.secrets import redact, redact_container_json

QUICK_S = 30.0
LOGS_S = 300.0
CONTAINER_FILES = "container"  # subfolder for what the container wrote


def redact_file(path: Path, secret_values: set[str]) -> None:
    """Mask secret values in a log, a line at a time (a log can be large): a secret
    value never holds a line break (harness/secrets.py), so no value spans lines."""
    masked = path.with_name(path.name + ".masked")
    with path.open(encoding="utf-8", errors="replace") as source, masked.open("w", encoding="utf-8") as out:
        for line in source:
            out.write(redact(line, secret_values))
    masked.replace(path)


def _inspect_document(output: str) -> str:
    """`docker inspect`'s JSON array as it printed it; lines a login shell printed
    around it (a pyenv rehash lock message, a banner) are left out."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\[", output, re.MULTILINE):
        try:
            _, end = decoder.raw_decode(output, match.start())
        except ValueError:
            continue
        return output[match.start():end] + "\n"
    raise ValueError("no docker inspect array in the output")


def collect_node(transport: Transport, docker: list[str], container: str | None, remote_log_dir: str,
                 folder: Path, secret_keys: set[str],
                 secret_values: set[str]) -> NodeCollected:
    """One container's state, output and log folder; with no container (None: none of
    this node was found), its log folder only: a name that is not known is never looked up.
    Secret values are masked in what the harness writes (container.json, container.log)."""
    folder.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    complete = True
    exit_code: int | None = None

    def fetch_tree() -> tuple[FetchedFiles, HarnessError | OSError | None]:
        try:
            return transport.get_tree(remote_log_dir, folder / CONTAINER_FILES), None
        except (HarnessError, OSError) as exc:
            return FetchedFiles(), exc

    if container is None:
        fetched, tree_error = fetch_tree()
        notes.append("no container of this node was found: no exit status, no output (container.log)")
    else:
        # Three independent round trips side by side: the state, the output, the log folder.
        with ThreadPoolExecutor(max_workers=2) as pool:
            tree = pool.submit(fetch_tree)
            output = pool.submit(transport.run_to_file, [*docker, "logs", container], folder / NODE_LOG,
                                 timeout=LOGS_S)
            inspect = transport.run([*docker, "inspect", container], timeout=QUICK_S)
            logs = output.result()
            fetched, tree_error = tree.result()
        exit_code = _read_inspect(inspect, folder, secret_keys, notes)
        if secret_values:
            redact_file(folder / NODE_LOG, secret_values)
        if logs.partial:
            complete = False
            notes.append(f"container.log is partial: docker logs did not finish within {LOGS_S:.0f} s")
        elif not logs.ok:
            notes.append(f"docker logs exited {logs.exit_code}")
    if tree_error is None:
        notes += [f"not collected: {skip}" for skip in fetched.skipped]
    else:
        complete = False
        notes.append(f"the container's log folder {remote_log_dir} could not be fetched: {tree_error}")
    return NodeCollected(exit_code, complete, notes, last_lines(folder / NODE_LOG))


def _read_inspect(inspect: CommandResult, folder: Path, secret_keys: set[str], notes: list[str]) -> int | None:
    """Save docker inspect's document as container.json; the exit code when the container ended."""
    if not inspect.ok:
        notes.append(f"docker inspect failed: {inspect.output.strip()[-200:]}")
        return None
    try:
        document = _inspect_document(inspect.output)
    except ValueError:
        document = inspect.output
    (folder / "container.json").write_text(redact_container_json(document, secret_keys), encoding="utf-8")
    try:
        state = json.loads(document)[0]["State"]
        if not state.get("Running"):
            return int(state["ExitCode"])
    except (ValueError, KeyError, IndexError, TypeError):
        notes.append("container.json: no readable State")
    return None
