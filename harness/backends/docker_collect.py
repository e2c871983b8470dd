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
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.backends.transport import FetchedFiles, Transport
from harness.core.results import NodeOutcome
from harness.errors import HarnessError
from harness.secrets import redact, redact_container_json

QUICK_S = 30.0
LOGS_S = 300.0
LAST_LINES = 30
CONTAINER_FILES = "container"  # subfolder for what the container wrote


def _last_lines(path: Path, count: int = LAST_LINES) -> list[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=count)]
    except OSError:
        return []


def _redact_file(path: Path, secret_values: set[str]) -> None:
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


def collect_node(transport: Transport, docker: list[str], container: str, remote_log_dir: str,
                 folder: Path, secret_keys: set[str],
                 secret_values: set[str]) -> tuple[int | None, bool, list[str], list[str]]:
    """(exit code, everything collected, notes, last lines) for one container and its log folder.
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

    # Three independent round trips side by side: the state, the output, the log folder.
    with ThreadPoolExecutor(max_workers=2) as pool:
        tree = pool.submit(fetch_tree)
        output = pool.submit(transport.run_to_file, [*docker, "logs", container], folder / "container.log",
                             timeout=LOGS_S)
        inspect = transport.run([*docker, "inspect", container], timeout=QUICK_S)
        logs = output.result()
        fetched, tree_error = tree.result()
    if inspect.ok:
        try:
            document = _inspect_document(inspect.output)
        except ValueError:
            document = inspect.output
        (folder / "container.json").write_text(redact_container_json(document, secret_keys), encoding="utf-8")
        try:
            state = json.loads(document)[0]["State"]
            if not state.get("Running"):
                exit_code = int(state["ExitCode"])
        except (ValueError, KeyError, IndexError, TypeError):
            notes.append("container.json: no readable State")
    else:
        notes.append(f"docker inspect failed: {inspect.output.strip()[-200:]}")
    if secret_values:
        _redact_file(folder / "container.log", secret_values)
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
    return exit_code, complete, notes, _last_lines(folder / "container.log")


def failed_outcome(host: str, node_rank: int, container: str, folder: Path, remote_run_dir: str,
                   exc: BaseException) -> NodeOutcome:
    return NodeOutcome(host=host, node_rank=node_rank, container=container, exit_code=None, log_dir=str(folder),
                       collected=False, remote_run_dir=remote_run_dir,
                       notes=[f"logs could not be collected: {exc}"],
                       last_lines=_last_lines(folder / "container.log"))
