"""Secrets never land on disk: which variables are secret, how they are masked,
how they travel (an env file written 0600, never an argv), and that no plan,
render, repr or serialisation holds a value."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_dry_run import normalise

from harness import REPO_ROOT
from harness.backends.docker_request import docker_plan
from harness.backends.image import plan_image
from harness.backends.launch import ENV_FILE_NAME
from harness.core.inventory import load_inventory
from harness.core.job import make_job
from harness.core.vendor import load_vendor
from harness.errors import UserError
from harness.secrets import (
    REDACTED,
    SecretEnv,
    env_file_text,
    is_secret_key,
    redact,
    redact_container_json,
    remove_file_argv,
    write_private_file_argv,
)

GOLDEN = Path(__file__).parent / "golden"
RUN_ID = "20261125-000000-abcdef"
INLINE = "hf_inline_value_0123456789"
FROM_ENV = "wandb-from-env-value-abcdef"
FROM_ENV_VAR = "BENCH_GOLDEN_WANDB_KEY"
INVENTORY = f"""
cluster:
  env:
    GLOO_SOCKET_IFNAME: lo
    HF_TOKEN: {INLINE}
    WANDB_API_KEY: {{from_env: {FROM_ENV_VAR}}}
hosts:
  - {{name: a, address: 10.1.0.1, devices: 2, work_dir: /w}}
  - {{name: b, address: 10.1.0.2, devices: 2, work_dir: /w}}
"""


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("HF_TOKEN", True), ("token", True), ("GITHUB_TOKEN_FILE", True), ("AWS_SECRET_ACCESS_KEY", True),
        ("client_secret", True), ("DB_PASSWORD", True), ("Password2", True), ("WANDB_API_KEY", True),
        ("ssh_key", True), ("NCCL_SOCKET_IFNAME", False), ("PYTHONPATH", False), ("KEY", False),
        ("KEYBOARD", False), ("MONKEY", False), ("CUDA_VISIBLE_DEVICES", False), ("NCCL_IB_HCA", False),
    ],
)
def test_which_keys_are_secret(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redact_masks_every_value_longest_first() -> None:
    text = "token=abc123 and again abc123, longer abc123xyz, empty stays"
    assert redact(text, ["abc123", "abc123xyz", ""]) == "token=*** and again ***, longer ***, empty stays"
    assert redact(text, []) == text


def test_redact_container_json_masks_secret_entries_only() -> None:
    inspect = [{
        "Id": "0123",
        "Args": ["-m", "torch.distributed.run", "--fix-hp", "bs=256,lr=0.72"],
        "Config": {
            "Env": [f"HF_TOKEN={INLINE}", "PYTHONPATH=/opt/bench-site", "MY_VAR=a\"quoted\"<value>",
                    "GLOO_SOCKET_IFNAME=lo", "EMPTY_PASSWORD=", "PATH=/usr/bin"],
            "Labels": {"bench.run_id": RUN_ID},
        },
    }]
    # docker writes 4-space indented JSON with <, >, & escaped.
    text = json.dumps(inspect, indent=4).replace("<", "\\u003c").replace(">", "\\u003e")
    masked = redact_container_json(text, {"MY_VAR"})
    assert INLINE not in masked and "quoted" not in masked
    env = json.loads(masked)[0]["Config"]["Env"]
    assert env == ["HF_TOKEN=***", "PYTHONPATH=/opt/bench-site", "MY_VAR=***", "GLOO_SOCKET_IFNAME=lo",
                   "EMPTY_PASSWORD=***", "PATH=/usr/bin"]
    assert json.loads(masked)[0]["Args"] == inspect[0]["Args"]
    assert masked.count("\n") == text.count("\n"), "the rest stays as docker wrote it"
    # Not JSON at all (a login shell's banner around it): masked all the same.
    noisy = "Welcome!\n" + text + "\nbye\n"
    assert INLINE not in redact_container_json(noisy, set())
    assert redact_container_json(noisy, set()).startswith("Welcome!\n")


def test_secret_env_never_shows_its_values() -> None:
    secret = SecretEnv({"HF_TOKEN": INLINE, "WANDB_API_KEY": FROM_ENV}, {"WANDB_API_KEY": FROM_ENV_VAR})
    assert dict(secret) == {"HF_TOKEN": INLINE, "WANDB_API_KEY": FROM_ENV}
    assert secret.source("WANDB_API_KEY") == FROM_ENV_VAR and secret.source("HF_TOKEN") is None
    for text in (repr(secret), str(secret), f"{secret}", secret.describe(), json.dumps({"e": secret}, default=str)):
        assert INLINE not in text and FROM_ENV not in text
        assert "HF_TOKEN=***" in text
    assert secret.describe() == f"HF_TOKEN=***, WANDB_API_KEY=*** (from ${FROM_ENV_VAR})"
    with pytest.raises(TypeError):
        json.dumps(secret)
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert copy.deepcopy(secret) is secret
    assert not SecretEnv() and len(secret) == 2


def test_env_file_text_and_its_refusals() -> None:
    assert env_file_text({"B_TOKEN": "x y=z", "A_KEY": ""}) == "A_KEY=\nB_TOKEN=x y=z\n"
    with pytest.raises(ValueError, match="newline"):
        env_file_text({"A_TOKEN": "one\ntwo"})
    with pytest.raises(ValueError, match="variable name"):
        env_file_text({"A TOKEN": "x"})


def test_env_file_is_written_owner_only_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "run dir" / ENV_FILE_NAME
    path.parent.mkdir()
    path.write_text("stale\n")
    os.chmod(path, 0o644)  # a leftover with loose permissions is replaced, not reused
    content = env_file_text({"HF_TOKEN": INLINE})
    done = subprocess.run(write_private_file_argv(str(path)), input=content.encode(), capture_output=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert path.read_text() == content
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert INLINE not in " ".join(write_private_file_argv(str(path)))
    subprocess.run(remove_file_argv(str(path)), check=True, timeout=30)
    assert not path.exists()


def write_inventory(tmp_path: Path, text: str = INVENTORY) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def make_plan(tmp_path: Path, text: str = INVENTORY):  # -> RunPlan
    inventory = load_inventory(write_inventory(tmp_path, text))
    job = make_job("resnet50", "cpu", "cpu", "2x2", run_id=RUN_ID)
    vendor = load_vendor("cpu")
    return docker_plan(job, inventory, vendor, plan_image(vendor, {}))


def test_plan_keeps_secret_values_out_of_argv_render_repr_and_serialisation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FROM_ENV_VAR, FROM_ENV)
    plan = make_plan(tmp_path)
    for entry in plan.request.nodes:
        node = entry.node
        assert dict(node.secret_env) == {"HF_TOKEN": INLINE, "WANDB_API_KEY": FROM_ENV}
        assert entry.env_file == f"/w/runs/{RUN_ID}/node{node.node_rank}/{ENV_FILE_NAME}"
        argv = entry.run_argv
        assert argv[argv.index("--env-file") + 1] == entry.env_file
        assert "GLOO_SOCKET_IFNAME=lo" in argv, "non-secret variables stay on the command line"
        assert not any("HF_TOKEN" in arg or "WANDB_API_KEY" in arg for arg in argv)
        assert env_file_text(node.secret_env) == f"HF_TOKEN={INLINE}\nWANDB_API_KEY={FROM_ENV}\n"
    texts = {
        "render": plan.render(),
        "repr(plan)": repr(plan),
        "str(nodes)": str(plan.nodes),
        "asdict": json.dumps(dataclasses.asdict(plan), default=str),
    }
    for what, text in texts.items():
        assert INLINE not in text and FROM_ENV not in text, what
    assert f"HF_TOKEN={REDACTED}, WANDB_API_KEY={REDACTED} (from ${FROM_ENV_VAR})" in plan.render()
    with pytest.raises(TypeError):
        pickle.dumps(plan)


def test_a_plan_without_secrets_has_no_env_file(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, INVENTORY.replace(f"    HF_TOKEN: {INLINE}\n", "").replace(
        f"    WANDB_API_KEY: {{from_env: {FROM_ENV_VAR}}}\n", ""))
    assert all(entry.env_file is None and not entry.node.secret_env for entry in plan.request.nodes)
    assert "--env-file" not in plan.render() and "secret env" not in plan.render()


def test_a_missing_from_env_variable_names_file_field_and_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FROM_ENV_VAR, raising=False)
    with pytest.raises(UserError) as info:
        make_plan(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "hosts.yaml") in message and "cluster.env.WANDB_API_KEY" in message
    assert FROM_ENV_VAR in message and "not set" in message
    assert INLINE not in message


def test_a_secret_value_that_cannot_fit_an_env_file_line_is_refused_unquoted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FROM_ENV_VAR, "first line\nsecond line")
    with pytest.raises(UserError) as info:
        make_plan(tmp_path)
    assert "cluster.env.WANDB_API_KEY" in str(info.value) and "newline" in str(info.value)
    assert "first line" not in str(info.value)


def dry_run(hosts: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--dry-run", "--run-id", RUN_ID, "--hosts", str(hosts),
         "--vendor", "cpu", "--config", "2x2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False, env=env,
    )


def test_dry_run_with_secrets_matches_golden_and_never_shows_a_value() -> None:
    env = {**os.environ, FROM_ENV_VAR: FROM_ENV}
    result = dry_run(GOLDEN / "hosts_2x2_secrets.yaml", env)
    assert result.returncode == 0, result.stderr
    assert INLINE not in result.stdout + result.stderr and FROM_ENV not in result.stdout + result.stderr
    assert result.stdout.count("--env-file /scratch/bench/runs/") == 2
    assert result.stdout.count(f"HF_TOKEN=***, WANDB_API_KEY=*** (from ${FROM_ENV_VAR})") == 2
    text = normalise(result.stdout)
    golden = GOLDEN / "dry_run_cpu_2x2_secrets.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_dry_run_without_the_from_env_variable_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if k != FROM_ENV_VAR}
    result = dry_run(GOLDEN / "hosts_2x2_secrets.yaml", env)
    assert result.returncode == 2
    assert "hosts_2x2_secrets.yaml: cluster.env.WANDB_API_KEY: environment variable BENCH_GOLDEN_WANDB_KEY" \
        in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr and INLINE not in result.stderr
