"""`python -m harness ...`: the command line."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import REPO_ROOT
from harness.campaign import cli as campaign_cli
from harness.errors import HarnessError, HostsNotReady, HostUnreachable, UserError
from harness.faults import cli as quarantine_cli
from harness.pages import env_cli
from harness.report import compare_cli, history_cli
from harness.report.noise_view import add_noise_arguments, rule_of

# A command imports what it uses when it runs: `--help` (and a mistyped argument)
# must not wait for rich, pydantic, paramiko or a backend to load.
if TYPE_CHECKING:
    from rich.console import Console

    from harness.core.results import RunResult
    from harness.core.vendor import VendorSpec
    from harness.pages.model import VendorPage

DEFAULT_HOSTS = REPO_ROOT / "hosts.yaml"
DEFAULT_RESULTS = REPO_ROOT / "results"


def _param(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, yaml.safe_load(value)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


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
    bench.add_argument("--stall-timeout", type=float, metavar="SECONDS",
                       help="stop the run as stalled when no rank wrote a progress event for this long "
                            "(default: the inventory's cluster.stall_timeout_s, 900)")
    bench.add_argument("--straggler-threshold", type=_share, metavar="SCORE",
                       help="name a rank a straggler when its compute speed is below this share of the fastest "
                            "rank's, in (0, 1] (default: the inventory's cluster.straggler_threshold, 0.9)")
    bench.add_argument("--clean-orphans", action="store_true",
                       help="remove containers that other (killed) runs left on these hosts instead of refusing")
    bench.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default results/)")
    bench.add_argument("--run-id", help="use this run id instead of a new one (names containers and folders)")
    bench.add_argument("--dry-run", action="store_true",
                       help="print the image, container and torchrun command of every node; touch no host")
    bench.add_argument("--repro", type=Path, metavar="PAGE",
                       help="reproduce a vendor README page: build its framework (framework_pins in "
                            "vendor.yaml), refuse to start when the hosts drift from its environment, and "
                            "compare the finished run with its row (reference.md)")
    bench.add_argument("--allow-drift", action="store_true",
                       help="with --repro: run although the hosts drift from the page (recorded in results.json)")
    add_noise_arguments(bench)
    quarantine_cli.add_bench_arguments(bench)

    clean = sub.add_parser("clean", help="remove containers the harness left on the inventory's hosts")
    clean.add_argument("--hosts", type=Path, default=DEFAULT_HOSTS, help="inventory file (default hosts.yaml)")
    clean.add_argument("--run-id", help="only this run's containers (default: every run's stopped ones)")
    clean.add_argument("--all", action="store_true",
                       help="without --run-id: running containers too (another controller's live run!)")

    collect = sub.add_parser("collect", help="bring back the logs a run left on its hosts, then remove its containers",
                             description="For a run whose host was lost (or a controller that was killed): "
                                         "collect what its remote run folders hold into "
                                         "RESULTS/RUN_ID/collected/<host>/ and remove its containers.")
    collect.add_argument("run_id", help="the run id (results/<run_id>)")
    collect.add_argument("--hosts", type=Path, default=DEFAULT_HOSTS, help="inventory file (default hosts.yaml)")
    collect.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default results/)")

    history_cli.add_parser(sub, DEFAULT_RESULTS)

    report = sub.add_parser("report", help="print the metric table of finished runs")
    report.add_argument("results", nargs="+", type=Path, help="results.json files or folders holding them")
    report.add_argument("--verbose", "-v", action="store_true",
                        help="whole failure reports (the failing rank's last lines), step times and log folders")
    add_noise_arguments(report)
    compare_cli.add_parser(sub)

    readme = sub.add_parser(
        "readme", help="write the vendor README page of finished runs",
        description="Write the whole vendor page (环境配置, 通用指标, 性能指标) of one case's runs, in the "
                    "reference pages' format. Failed runs are left out (one line on stderr each).")
    readme.add_argument("results", nargs="+", type=Path, help="results.json files or folders holding them")
    readme.add_argument("--out", type=Path, help="write the page here (default: stdout); an existing file "
                        "is kept unless --force")
    readme.add_argument("--force", action="store_true", help="overwrite --out when it exists")
    readme.add_argument("--lang", choices=("zh", "en"), default="zh", help="page language (default zh)")
    readme.add_argument("--reference", type=Path, metavar="PAGE",
                        help="take the title, model name, dataset and 通用指标 wording from this vendor page")
    readme.add_argument("--include-failed", action="store_true", help="give failed runs a row too")

    env = sub.add_parser("env", help="capture the hosts' environment, or compare it with a vendor page")
    env_sub = env.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    diff = env_sub.add_parser(
        "diff", help="compare every host's environment with a vendor page's (runs nothing)",
        description="Show, per host, the page's environment beside the captured one. Exit 0 when the "
                    "checked fields (accelerator, device memory, OS, kernel, driver, Docker, framework pin) "
                    "match, 1 when one drifts, 2 for bad input.")
    diff.add_argument("page", type=Path, help="vendor README page (markdown)")
    diff.add_argument("--hosts", type=Path, default=DEFAULT_HOSTS, help="inventory file (default hosts.yaml)")
    diff.add_argument("--vendor", help="vendor whose device tool and framework pins to use "
                      "(default: the vendor that pins the page's framework)")
    capture = env_sub.add_parser("capture", help="print every host's captured environment as JSON")
    capture.add_argument("--hosts", type=Path, default=DEFAULT_HOSTS, help="inventory file (default hosts.yaml)")
    capture.add_argument("--vendor", help="vendor whose device tool to ask (default: try each known tool)")
    campaign_cli.add_parser(sub, DEFAULT_RESULTS)
    quarantine_cli.add_parser(sub, DEFAULT_RESULTS)
    return parser


def _wide_console(stderr: bool = False, width: int = 140) -> Console:
    """Tables keep their columns in a log file or a pipe too."""
    from rich.console import Console

    return Console(stderr=stderr, width=max(Console(stderr=stderr).width, width))


def _warn(console: Console, message: str) -> None:
    from rich.text import Text

    console.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)


def _repro_pins(args: argparse.Namespace, vendor: VendorSpec,
                console: Console) -> tuple[VendorPage | None, dict[str, Any]]:
    """The --repro page and the template params it pins (bad page, unknown pin: UserError)."""
    from harness.pages import repro
    from harness.pages.parse import read_page

    if args.repro is None:
        if args.allow_drift:
            _warn(console, "--allow-drift has no effect without --repro")
        return None, {}
    page = read_page(args.repro)
    pins = repro.framework_pins(page, vendor, str(args.repro))
    framework = page.software.framework
    if not pins:
        _warn(console, f"{args.repro} names no {repro.FRAMEWORK_FIELD}: building the vendor's default image")
    else:
        pinned = ", ".join(f"{key}={value}" for key, value in pins.items())
        console.print(f"{args.repro}: {repro.FRAMEWORK_FIELD} {framework} -> {pinned}", highlight=False)
    for key, value in dict(args.param).items():
        if key in pins and pins[key] != value:
            _warn(console, f"--param {key}={value} overrides the page's pin {key}={pins[key]}: "
                           f"the image will not hold {framework}")
    return page, pins


def _cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from rich.text import Text

    from harness.backends.registry import make_backend
    from harness.core.inventory import load_inventory
    from harness.core.job import ensure_new_run_id, make_job
    from harness.core.runner import RunInterrupted, build_plan, run_job
    from harness.core.validate import check_case_config
    from harness.core.vendor import load_vendor
    from harness.core.watch import WatchLimits
    from harness.faults.bench_gate import BenchQuarantine
    from harness.pages import compare, repro
    from harness.report import history
    from harness.report.noise_view import print_check
    from harness.report.tables import print_results

    inventory = load_inventory(args.hosts)
    if args.straggler_threshold is not None:
        cluster = inventory.cluster.model_copy(update={"straggler_threshold": args.straggler_threshold})
        inventory = inventory.model_copy(update={"cluster": cluster})
    vendor = load_vendor(args.vendor)
    page, pins = _repro_pins(args, vendor, console)
    source = str(args.repro)
    job = make_job(
        args.case, vendor.name, args.accelerator or vendor.accelerator, args.config,
        fix_hp=args.fix_hp, synthetic=not args.real_data, timeout_s=args.timeout,
        template_overrides={**pins, **dict(args.param)}, run_id=args.run_id,
    )
    check_case_config(job)
    if page is not None and compare.pick_row(page, job.nnodes, job.nproc_per_node, job.fix_hp or "/") is None:
        _warn(console, f"{source} has no row for {job.config_name}: there will be nothing to compare with")
    tables = _wide_console(stderr=True)
    gate = repro.EnvironmentGate(page, source, args.allow_drift, tables) if page is not None else None
    comparison: list[compare.Comparison] = []

    def annotate(result: RunResult, out_dir: Path) -> RunResult:
        if page is None or gate is None:
            return result
        result, found = compare.record_reference(result, page, source, pins, gate, out_dir)
        comparison.append(found)
        return result

    limits = WatchLimits.for_cluster(inventory.cluster, args.timeout, args.stall_timeout)
    ensure_new_run_id(args.results, job.run_id)  # a dry run refuses a taken id as the run would
    quarantine = BenchQuarantine(args.results, [host.name for host in inventory.hosts[:job.nnodes]],
                                 inventory.cluster.quarantine.policy(), console, args.ignore_quarantine)
    backend = make_backend(inventory)
    try:
        quarantine.check(dry_run=args.dry_run)  # before anything touches a host
        if args.dry_run:
            sys.stdout.write(build_plan(job, inventory, backend).render())
            return 0
        # A campaign holds these hosts: refuse, naming it (a dead one's lock is ignored with a warning).
        result = run_job(job, inventory, backend, args.results, console, check_environment=gate,
                         limits=limits, clean_orphans=args.clean_orphans, annotate=annotate,
                         refuse_held=lambda: backend.refuse_if_held(job, lambda message: _warn(console, message)))
    except (HostUnreachable, HostsNotReady) as exc:  # not started (exit 2), but the host's fault counts
        quarantine.preflight_failed(exc, job.run_id)
        raise
    except RunInterrupted as exc:
        out_dir = args.results / exc.result.run_id / exc.result.case / exc.result.config_name
        console.print(Text.assemble(("interrupted: ", "red"), f"containers stopped and removed, logs in {out_dir}"))
        return 130
    finally:
        backend.close()
    out_dir = args.results / job.run_id / job.case / job.config_name
    history_file = args.results / history.HISTORY_FILE
    out = _wide_console(width=220)  # as `report`: the vendor columns plus MFU, % exp, J/1k unfolded
    print_results([result], out)
    print_check(out, result.run_id, history.check(history_file, result, rule_of(args)))
    quarantine.record(result.faults)
    for found in comparison:
        out.print(compare.comparison_table(found))
        for note in found.notes:
            out.print(Text(f"note: {note}", style="dim"))
        out.print(Text(f"written to {out_dir / 'reference.md'}", style="dim"))
    return 0 if result.status == "success" else 1


def _cmd_clean(args: argparse.Namespace, console: Console) -> int:
    from harness.backends.registry import make_backend
    from harness.core.inventory import load_inventory

    inventory = load_inventory(args.hosts)
    backend = make_backend(inventory)
    try:
        found = backend.leftovers(inventory.hosts, args.run_id)
        # Without a run id, a running container may be another controller's live run.
        chosen = found if args.run_id or args.all else [c for c in found if c.state != "running"]
        for spared in (c for c in found if c not in chosen):
            console.print(f"left running: {spared.describe()} (--all removes it too)", highlight=False)
        removed = backend.remove(chosen)
    finally:
        backend.close()
    console.print(f"removed {len(removed)} container(s)" + (f": {', '.join(removed)}" if removed else ""))
    return 0


def _cmd_collect(args: argparse.Namespace, console: Console) -> int:
    from harness.backends.registry import make_backend
    from harness.core.inventory import load_inventory

    inventory = load_inventory(args.hosts)
    dest = args.results / args.run_id / "collected"
    backend = make_backend(inventory)
    try:
        nodes = backend.collect_again(args.run_id, inventory.hosts, dest)
    finally:
        backend.close()
    for node in nodes:
        state = "collected" if node.collected else "NOT collected"
        console.print(f"{node.host}: {state} into {node.log_dir}" + "".join(f"; {n}" for n in node.notes),
                      highlight=False)
    if not nodes:
        console.print(f"nothing of run {args.run_id} found on {', '.join(h.name for h in inventory.hosts)}")
    return 0 if all(node.collected for node in nodes) else 1


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from harness.report.load import checks_by_run, load_sourced
    from harness.report.noise_view import print_check
    from harness.report.tables import print_results

    loaded = load_sourced(args.results)
    checks = checks_by_run(loaded, rule_of(args))
    # Full run ids, case and config in every row: wider than a terminal rather than folded.
    out = _wide_console(width=220)
    regressions = {run_id: [check.describe()] for run_id, check in checks.items() if check.regression}
    print_results([result for _, result in loaded], out, verbose=args.verbose, regressions=regressions)
    for _, result in loaded:  # one line per run with history: the regressions are above, in their run's lines
        if result.run_id in checks and not checks[result.run_id].regression:
            print_check(out, result.run_id, checks[result.run_id])
    return 0


def _cmd_readme(args: argparse.Namespace, console: Console) -> int:
    from rich.text import Text

    from harness.pages.parse import read_page
    from harness.pages.readme import build_readme
    from harness.pages.render import render_page
    from harness.report.load import load_results

    results = load_results(args.results)
    reference = read_page(args.reference) if args.reference else None
    readme = build_readme(results, reference, include_failed=args.include_failed)
    for result in readme.excluded:
        reason = (result.failure or "unknown failure").strip().splitlines()[0]
        console.print(Text(f"excluded failed run {result.run_id} ({result.case} {result.vendor} "
                           f"{result.config_name}): {reason}"), soft_wrap=True)
    for note in readme.notes:
        _warn(console, note)
    text = render_page(readme.page, args.lang)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    if args.out.exists() and not args.force:
        raise UserError("exists already; pass --force to overwrite it, or choose another --out", file=str(args.out))
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write the page: {exc.strerror or exc}", file=str(args.out)) from exc
    console.print(f"wrote {args.out} ({len(readme.page.metric_rows)} row(s))", highlight=False)
    return 0


COMMANDS = {
    "bench": _cmd_bench,
    "history": history_cli.cmd_history,
    "clean": _cmd_clean,
    "collect": _cmd_collect,
    "report": _cmd_report,
    "readme": _cmd_readme,
    "env": env_cli.cmd_env,
    "quarantine": quarantine_cli.cmd_quarantine,
    "campaign": campaign_cli.cmd_campaign,
    "compare": compare_cli.cmd_compare,
}


def _terminate(signum: int, frame: object) -> None:
    # An overnight run killed by its scheduler or a closed session cleans up as for Ctrl-C.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, soft_wrap=True)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    try:
        return COMMANDS[args.command](args, console)
    except UserError as exc:
        console.print(Text.assemble(("error: ", "red"), str(exc)), soft_wrap=True)
        return exc.exit_code
    except HarnessError as exc:
        console.print(Text.assemble(("failed: ", "red"), str(exc)), soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print(Text.assemble(("interrupted", "red"), " before any container was started"))
        return 130
