"""`python -m harness ...`: the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from harness import REPO_ROOT
from harness.docker_backend import DockerSshBackend, remove_labelled
from harness.errors import HarnessError, UserError
from harness.inventory import load_inventory
from harness.job import make_job
from harness.report import print_result, write_reports
from harness.results import RunResult
from harness.runner import build_plan, run_job
from harness.vendor import load_vendor

DEFAULT_HOSTS = REPO_ROOT / "hosts.yaml"
DEFAULT_RESULTS = REPO_ROOT / "results"


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Benchmark harness for AI accelerators: runs a training case in the vendor's "
                    "container on every host of an inventory and reports the vendor-format metrics.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="run one case (or print its plan with --dry-run)",
                           description="Run CASE on VENDOR's image across CONFIG = <nnodes>x<nproc>.")
    bench.add_argument("--case", default="resnet50", help="training case, a folder of cases/ (default resnet50)")
    bench.add_argument("--vendor", default="cpu", help="vendor, a folder of Dockerfiles/ (default cpu)")
    bench.add_argument("--config", default="1x1", help="<nnodes>x<nproc_per_node>: 1x1, 1x8, 2x8 ... (default 1x1)")
    bench.add_argument("--accelerator", help="accelerator name for the case's hardware config "
                       "(default: the vendor spec's, e.g. A100)")
    bench.add_argument("--hosts", type=Path, default=DEFAULT_HOSTS, help="inventory file (default hosts.yaml)")
    bench.add_argument("--fix-hp", help='hyper-parameter overrides, e.g. "bs=256,lr=0.72"')
    bench.add_argument("--real-data", action="store_true",
                       help="train on each host's data_dir (ImageNet layout) instead of synthetic data")
    bench.add_argument("--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                       help="override a Dockerfile template parameter (repeatable)")
    bench.add_argument("--timeout", type=float, default=24 * 3600.0, help="seconds before the run is stopped")
    bench.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default results/)")
    bench.add_argument("--run-id", help="use this run id instead of a new one (names containers and folders)")
    bench.add_argument("--dry-run", action="store_true",
                       help="print the image, container and torchrun command of every node; touch no host")

    clean = sub.add_parser("clean", help="remove containers the harness left on the inventory's hosts")
    clean.add_argument("--hosts", type=Path, default=DEFAULT_HOSTS)
    clean.add_argument("--run-id", help="only this run's containers (default: every run's)")

    report = sub.add_parser("report", help="print the metric table of finished runs")
    report.add_argument("results", nargs="+", type=Path, help="results.json files or folders holding them")
    return parser


def _cmd_bench(args: argparse.Namespace, console: Console) -> int:
    inventory = load_inventory(args.hosts)
    vendor = load_vendor(args.vendor)
    job = make_job(
        args.case, vendor.name, args.accelerator or vendor.accelerator, args.config,
        fix_hp=args.fix_hp, synthetic=not args.real_data, timeout_s=args.timeout,
        template_overrides=dict(args.param), run_id=args.run_id,
    )
    backend = DockerSshBackend(inventory)
    try:
        if args.dry_run:
            sys.stdout.write(build_plan(job, inventory, backend).render())
            return 0
        result = run_job(job, inventory, backend, args.results, console)
    finally:
        backend.close()
    out_dir = args.results / job.run_id / job.case / job.config_name
    write_reports([result], out_dir)
    print_result(result, Console(width=max(Console().width, 140)))
    return 0 if result.status == "success" else 1


def _cmd_clean(args: argparse.Namespace, console: Console) -> int:
    inventory = load_inventory(args.hosts)
    backend = DockerSshBackend(inventory)
    try:
        removed = remove_labelled(backend, inventory.hosts, args.run_id)
    finally:
        backend.close()
    console.print(f"removed {len(removed)} container(s)" + (f": {', '.join(removed)}" if removed else ""))
    return 0


def load_results(paths: list[Path]) -> list[RunResult]:
    files: list[Path] = []
    for path in paths:
        files += sorted(path.rglob("results.json")) if path.is_dir() else [path]
    if not files:
        raise UserError("no results.json found", file=", ".join(map(str, paths)))
    results = []
    for file in files:
        try:
            results.append(RunResult.model_validate_json(file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise UserError(f"not a results.json written by this harness: {exc}", file=str(file)) from exc
    return results


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    for result in load_results(args.results):
        print_result(result, Console())
    return 0


COMMANDS = {"bench": _cmd_bench, "clean": _cmd_clean, "report": _cmd_report}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        return COMMANDS[args.command](args, console)
    except UserError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return exc.exit_code
    except HarnessError as exc:
        console.print(f"[red]failed:[/red] {exc}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
