"""A login shell that prints around every command changes no captured field.

Probes read their answer between markers they print themselves
(harness/backends/marked.py). Here the shell around them is noisy for real:
first a local `sh` that prints a banner before and after each command, on
stdout and stderr; then a real sshd of the test's own (tests/spare_sshd.py)
whose login shell sources a file that prints a banner, a module-style message
on stderr and a line without its newline before every command, and more at
exit. A capture through it must equal one through the clean test host node1
(the same machine).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pytest

from harness.backends.marked import UnmarkedAnswer, inner_argv, marked_argv, read_marked, run_marked
from harness.backends.nodes import NodeBackend
from harness.backends.registry import make_backend
from harness.backends.ssh import SshTransport
from harness.backends.transport import CommandResult, LocalTransport
from harness.core.inventory import Cluster, Host, load_inventory
from harness.core.job import make_job
from harness.core.runner import build_plan
from harness.hostinfo.model import UNKNOWN, EnvironmentInfo
from harness.hostinfo.probes import capture_environment

if TYPE_CHECKING:  # pytest keeps one `conftest` module at a time: import for types only
    from conftest import TestInfra
    from spare_sshd import SpareSshd  # imported by pytest_plugins, with assertion rewriting

pytest_plugins = ["spare_sshd"]  # the spare_sshd fixture

BANNER = "BANNER"  # in every line the noisy shells print, and in nothing a probe prints

# "$@" is the command; the shell prints around it on both streams, and keeps its status.
NOISY_SH = (f'echo "{BANNER} welcome to $0"; echo "{BANNER} module: loaded" >&2; printf "{BANNER}-no-newline"; '
            f'"$@"; rc=$?; echo "{BANNER} bye"; echo "{BANNER} bye on stderr" >&2; exit $rc')


class NoisyLocalTransport(LocalTransport):
    """This machine, every command run under a shell that prints a banner around it."""

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        return super().run(["sh", "-c", NOISY_SH, "noisy-login", *argv], timeout=timeout, stdin=stdin)


class SilentShellTransport(LocalTransport):
    """A shell that prints its banner and never runs the command."""

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> CommandResult:
        return super().run(["sh", "-c", f'echo "{BANNER} restricted shell"'], timeout=timeout, stdin=stdin)


def comparable(info: EnvironmentInfo) -> dict[str, Any]:
    """Everything captured, less what names the host or the moment."""
    data = info.model_dump(mode="json")
    del data["host"], data["captured_at"]
    data["framework"]["source"] = data["framework"]["source"].replace(info.host, "HOST")
    return data


def assert_no_banner(info: EnvironmentInfo) -> None:
    text = info.model_dump_json()
    assert BANNER not in text and "bye" not in text, json.dumps(json.loads(text), indent=1)


# ---------------------------------------------------------------------------------- markers, locally


def test_the_shell_is_noisy_without_markers() -> None:
    raw = NoisyLocalTransport().run(["echo", "answer"], timeout=10)
    assert raw.ok and raw.output != "answer\n"
    assert raw.output.count(BANNER) == 5 and "answer\n" in raw.output


@pytest.mark.parametrize(("argv", "exit_code", "output"), [
    (["echo", "answer"], 0, "answer\n"),
    (["printf", "two\\nlines\\n\\n\\n"], 0, "two\nlines\n"),  # trailing blank lines dropped
    (["printf", "no newline"], 0, "no newline\n"),
    (["true"], 0, ""),
    (["sh", "-c", "echo out; echo err >&2; echo out2; exit 3"], 3, "out\nerr\nout2\n"),  # both streams, in order
    (["sh", "-c", "kill -9 $$"], 137, ""),
])
def test_run_marked_keeps_only_the_commands_answer(argv: list[str], exit_code: int, output: str) -> None:
    for transport in (LocalTransport(), NoisyLocalTransport()):
        result = run_marked(transport, argv, timeout=10)
        assert (result.exit_code, result.output, result.argv) == (exit_code, output, argv)


def test_run_marked_on_a_missing_tool_and_a_timeout() -> None:
    missing = run_marked(NoisyLocalTransport(), ["no-such-tool-here", "-x"], timeout=10)
    assert missing.exit_code == 127 and "no-such-tool-here" in missing.output and BANNER not in missing.output
    slow = run_marked(NoisyLocalTransport(), ["sh", "-c", "echo started; sleep 2"], timeout=0.5)
    assert slow.timed_out and slow.output == ""  # the answer is whole or absent: never the banner


def test_a_shell_that_never_runs_the_command() -> None:
    with pytest.raises(UnmarkedAnswer) as caught:
        run_marked(SilentShellTransport(), ["uname", "-r"], timeout=10)
    assert caught.value.remote_exit_code == 0 and BANNER in caught.value.output
    assert "uname -r" in str(caught.value) and BANNER not in str(caught.value)


def test_markers_are_the_calls_own() -> None:
    argv = marked_argv(["docker", "version"], "aaaa")
    assert inner_argv(argv) == ["docker", "version"] and inner_argv(["docker", "version"]) is None
    begin, end = argv[4], argv[5]
    assert read_marked(f"noise {begin}\n24.0.7\n{end}\nbye\n", "aaaa") == "24.0.7\n"
    assert read_marked(f"{begin}\n24.0.7\n{end}\n", "bbbb") is None  # another call's markers
    assert read_marked(f"{begin}\n24.0.7\n", "aaaa") is None  # cut short
    assert read_marked(f"{end}\n{begin}\n", "aaaa") is None  # out of order


def test_capture_through_a_noisy_local_shell() -> None:
    clean = capture_environment(LocalTransport(), python=sys.executable)
    noisy = capture_environment(NoisyLocalTransport(), python=sys.executable)
    assert_no_banner(noisy)
    assert comparable(noisy) == comparable(clean)


# ---------------------------------------------------------------------------------- over a real noisy sshd

# What the host's shell does with every command: a banner on both streams and a
# line without its newline first, a trap that prints at exit, the command in
# between (sshd's ForceCommand: the login shell, `bash -c`, sources this file,
# which runs the client's command as bash -c would have). root's own ~/.bashrc
# still runs first, as on every login here (its pyenv may add lines of its own).
#
# Not BASH_ENV: Debian's bash, run by sshd, reads ~/.bashrc instead of BASH_ENV,
# and every bash script the command starts (pyenv's python3 shim) would read it,
# printing inside the probe's own output where no shell-side marker can help.
NOISY_LOGIN = f"""\
echo "{BANNER} Welcome to the noisy test host"
echo "{BANNER} module: cuda/12.4 loaded" >&2
printf '{BANNER} no newline'
trap 'echo "{BANNER} bye"; echo "{BANNER} bye on stderr" >&2' EXIT
eval "$SSH_ORIGINAL_COMMAND"
"""


@pytest.fixture
def noisy_sshd(spare_sshd: Callable[..., "SpareSshd"], tmp_path: Path) -> "SpareSshd":
    """A spare sshd (started, listening; stopped after the test) whose login
    shell prints around every command."""
    login = tmp_path / "noisy-login.sh"
    login.write_text(NOISY_LOGIN, encoding="utf-8")
    return spare_sshd(extra_config=[f'ForceCommand . "{login}"'])


def ssh_transport(infra: "TestInfra", name: str, address: str, port: int, known_hosts: Path) -> SshTransport:
    host = Host(name=name, address=address, port=port, user="root", key=str(infra.client_key))
    return SshTransport(host, Cluster(known_hosts=str(known_hosts), accept_unknown_host_keys=False, ssh_timeout_s=10))


def test_capture_over_a_login_shell_that_prints_a_banner(infra: "TestInfra", noisy_sshd: "SpareSshd",
                                                         tmp_path: Path) -> None:
    known = noisy_sshd.known_hosts_file(tmp_path / "known_hosts", include=infra.known_hosts)
    clean_host = infra.host("node1")
    noisy = ssh_transport(infra, "noisy", noisy_sshd.address, noisy_sshd.port, known)
    clean = ssh_transport(infra, "node1", clean_host.address, clean_host.port, known)
    try:
        # The host is noisy for real: before the command, on both streams, and at exit.
        raw = noisy.run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=30)
        assert raw.ok, raw.output
        assert all(text in raw.output for text in ("Welcome", "module: cuda", "no newline", f"{BANNER} bye"))
        noisy_env = capture_environment(noisy, timeout=30)
        clean_env = capture_environment(clean, timeout=30)
    finally:
        noisy.close()
        clean.close()
    assert_no_banner(noisy_env)
    assert comparable(noisy_env) == comparable(clean_env)
    # The cell of the issue: docker's own answer, the banner's lines gone from it.
    assert noisy_env.docker_version != UNKNOWN and noisy_env.docker_version in raw.output


def test_preflight_checks_over_a_login_shell_that_prints_a_banner(infra: "TestInfra", noisy_sshd: "SpareSshd",
                                                                  make_hosts_yaml: Callable[..., Path],
                                                                  tmp_path: Path) -> None:
    """The Docker backend's host checks read the clock, Docker's version and the
    free disk between their markers too (the noisy host is node rank 0: it gets
    the master-port check as well). Called per host: the backend's orphan
    listing would see other test runs' containers on this machine's engine."""
    known = noisy_sshd.known_hosts_file(tmp_path / "known_hosts", include=infra.known_hosts)
    inventory = load_inventory(make_hosts_yaml(
        hosts=[], devices=1, cluster_overrides={"known_hosts": str(known)},
        extra_hosts=[noisy_sshd.inventory_entry("noisy"), {"name": "node1", "address": infra.host("node1").address}]))
    backend = make_backend(inventory)
    assert isinstance(backend, NodeBackend)
    try:
        plan = build_plan(make_job("resnet50", "cpu", "cpu", "2x1"), inventory, backend)
        facts = {node.host.name: backend.payload.check(backend.transport(node.host), plan, node)[0]
                 for node in plan.nodes}
    finally:
        backend.close()
    assert [node.host.name for node in plan.nodes] == ["noisy", "node1"]
    assert BANNER not in json.dumps(facts)
    assert facts["noisy"]["docker"] == facts["node1"]["docker"] != "unknown"
    for fact in facts.values():
        assert abs(float(fact["clock_skew_s"])) < 5 and float(fact["work_dir_free_gib"]) > 0


def test_a_batch_reads_each_commands_answer_and_status_through_a_noisy_shell() -> None:
    from harness.backends.marked import run_marked_batch

    commands = [["printf", "one\\ntwo\\n"], ["sh", "-c", "echo to-stderr >&2; exit 3"],
                ["no-such-tool-here"], ["echo", "@@harness-rc-forged@@ 0"]]
    answers = run_marked_batch(NoisyLocalTransport("noisy"), commands, timeout=20)
    assert [a.exit_code if a else None for a in answers] == [0, 3, 127, 0]
    texts = [a.output if a else "" for a in answers]
    assert texts[0] == "one\ntwo\n" and texts[1] == "to-stderr\n" and texts[3] == "@@harness-rc-forged@@ 0\n"
    assert all(BANNER not in text for text in texts)
    assert [a.argv for a in answers if a] == commands


def test_a_batch_the_shell_never_ran_leaves_every_answer_missing() -> None:
    from harness.backends.marked import run_marked_batch

    assert run_marked_batch(SilentShellTransport("silent"), [["true"], ["echo", "x"]], timeout=20) == [None, None]
