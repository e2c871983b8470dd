"""`python -m harness campaign run SUITE [--resume]` and `campaign status [FOLDER]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import UserError

# Imported when a command runs, not when the parser is built (`--help` stays quick).
if TYPE_CHECKING:
    from rich.console import Console


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_results: Path) -> None:
    campaign = sub.add_parser("campaign", help="run a suite of jobs overnight, or show where one stands")
    actions = campaign.add_subparsers(dest="campaign_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run", help="run every job of a suite file",
        description="Check every job of SUITE, lock its hosts, run the jobs in order (infra failures retried "
                    "with backoff), keep the state in results/campaigns/<name>/<stamp>/ and write "
                    "summary.md/summary.html there. Exit 0 all succeeded, 1 any failed, 2 bad suite, "
                    "130 interrupted (--resume continues).")
    run.add_argument("suite", type=Path, help="suite file (YAML), e.g. suites/cpu-smoke.yaml")
    run.add_argument("--resume", action="store_true",
                     help="continue the latest campaign of this suite where it stopped")
    run.add_argument("--results", type=Path, default=default_results, help="results folder (default results/)")
    status = actions.add_parser("status", help="what a campaign ran, is running and has left")
    status.add_argument("folder", nargs="?", type=Path,
                        help="a campaign folder (results/campaigns/<name>/<stamp>); default: the latest")
    status.add_argument("--results", type=Path, default=default_results, help="results folder (default results/)")


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from harness.campaign.runner import run_campaign
    from harness.campaign.view import stamped

    return run_campaign(args.suite, args.results, args.resume, stamped(console))  # a log: every line timed


def _cmd_status(args: argparse.Namespace, console: Console) -> int:
    from collections import Counter

    from rich.console import Console

    from harness.campaign.state import STATE_FILE, StateStore, all_folders
    from harness.campaign.view import controller_alive, controller_line, state_table, unit_status

    folder = args.folder
    if folder is None:
        found = all_folders(args.results)
        if not found:
            console.print(f"no campaign in {args.results / 'campaigns'}", highlight=False)
            return 0
        folder = found[-1]
    if not (folder / STATE_FILE).is_file():
        raise UserError(f"no {STATE_FILE} here: not a campaign folder (results/campaigns/<name>/<stamp>)",
                        file=str(folder))
    state = StateStore(folder).load()
    out = Console(width=max(Console().width, 140))
    alive = controller_alive(state) if state.status == "running" else None
    shown = "interrupted" if state.status == "running" and alive is False else state.status
    out.print(state_table(state, f"campaign {state.name} {state.stamp} ({folder}): {shown}", alive))
    counts = Counter(unit_status(state, unit, alive) for unit in state.units)
    done = counts["success"] + counts["failed"]
    out.print(f"{done} of {len(state.units)} run(s) done: {counts['success']} ok, {counts['failed']} failed, "
              f"{counts['running']} running, "
              + (f"{counts['interrupted']} interrupted, " if counts["interrupted"] else "")
              + f"{counts['waiting']} waiting; "
              f"{controller_line(state, alive)}; updated {state.updated_at}", highlight=False)
    for entry in state.quarantined:
        out.print(f"quarantined: {entry.describe()}", highlight=False)
    for bisection in state.bisections:
        out.print(f"pairwise runs after {bisection.run_id}: {bisection.note}", highlight=False)
    if (folder / "summary.md").is_file():
        out.print(f"summary: {folder / 'summary.md'}, {folder / 'summary.html'}", highlight=False)
    return 0


def cmd_campaign(args: argparse.Namespace, console: Console) -> int:
    return {"run": _cmd_run, "status": _cmd_status}[args.campaign_command](args, console)
