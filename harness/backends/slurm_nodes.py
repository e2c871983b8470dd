"""Reaching a Slurm job's nodes and reading what its tasks left: commands on a node
as overlapping job steps (SrunTransport), `scontrol -o` fields, and one node's
files from the shared run folder in the results' layout. Used by slurm.py."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from pathlib import Path

from harness.backends.docker_collect import CONTAINER_FILES
from harness.backends.payload import LAST_LINES
from harness.backends.slurm_request import CONTAINER_JSON, CONTAINER_LOG, EXIT_STATUS
from harness.backends.transport import CommandResult, FetchedFiles, LocalTransport, Transport
from harness.core.results import NodeOutcome
from harness.secrets import redact, redact_container_json

_FIELD_RE = re.compile(r"(\w+)=(\S*)")


class SrunTransport(Transport):
    """Commands on one node of a running job, as overlapping steps; files through
    the shared work_dir (the same path on the controller and the nodes)."""

    def __init__(self, job_id: str, node: str) -> None:
        self.host = node
        self.job_id = job_id
        self._local = LocalTransport(node)

    def _argv(self, argv: list[str]) -> list[str]:
        return ["srun", "--jobid", self.job_id, "--overlap", "--nodes", "1", "--ntasks", "1",
                # Through sh, a missing command exits 127 as it does over SSH (not srun's execve error).
                "--nodelist", self.host, "--quiet", "/bin/sh", "-c", 'exec "$@"', "sh", *argv]

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        result = self._local.run(self._argv(argv), timeout, stdin)
        return dataclasses.replace(result, argv=argv)

    def run_to_file(self, argv: list[str], dest: Path, timeout: float, stdin: bytes | None = None) -> CommandResult:
        return dataclasses.replace(self._local.run_to_file(self._argv(argv), dest, timeout, stdin), argv=argv)

    def stream(self, argv: list[str], on_data: Callable[[bytes], None], stop: threading.Event) -> int | None:
        """One long-lived step (the monitor's loop); ending srun ends the step."""
        return self._local.stream(self._argv(argv), on_data, stop)

    def put_tree(self, local: Path, remote: str) -> None:
        self._local.put_tree(local, remote)

    def get_tree(self, remote: str, local: Path) -> FetchedFiles:
        return self._local.get_tree(remote, local)


def job_fields(text: str) -> dict[str, str]:
    """`scontrol show job -o` as key -> value."""
    return dict(_FIELD_RE.findall(text))


def labelled_host(run_dir: Path) -> str:
    match = re.search(r'"bench\.host":\s*"([^"]+)"', _read(run_dir / CONTAINER_JSON))
    return match.group(1) if match else ""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def collect_run_dir(host: str, node_rank: int, container: str, run_dir: Path, folder: Path,
                    secret_keys: set[str], secret_values: set[str]) -> NodeOutcome:
    """One node's files from the shared run folder into the results' layout:
    container.json, container.log, and what the container wrote under container/."""
    notes: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    status = _read(run_dir / EXIT_STATUS).strip()
    exit_code = int(status) if status.lstrip("-").isdigit() else None
    if exit_code is None:
        notes.append(f"{run_dir / EXIT_STATUS} missing: the task did not finish saving its logs")
    if (run_dir / CONTAINER_JSON).is_file():
        (folder / CONTAINER_JSON).write_text(redact_container_json(_read(run_dir / CONTAINER_JSON), secret_keys),
                                             encoding="utf-8")
    log = _read(run_dir / CONTAINER_LOG)
    (folder / CONTAINER_LOG).write_text(redact(log, secret_values) if secret_values else log, encoding="utf-8")
    fetched = LocalTransport(host).get_tree(str(run_dir / "logs"), folder / CONTAINER_FILES)
    notes += [f"not collected: {skip}" for skip in fetched.skipped]
    return NodeOutcome(host=host, node_rank=node_rank, container=container, exit_code=exit_code,
                       log_dir=str(folder), last_lines=log.splitlines()[-LAST_LINES:], collected=exit_code is not None,
                       remote_run_dir=str(run_dir), notes=notes)
