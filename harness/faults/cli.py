"""`python -m harness quarantine list | add HOST --reason ... [--expiry 24h|never] | release HOST`,
and bench's `--ignore-quarantine`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import UserError

# Imported when a command runs, not when the parser is built (`--help` stays quick).
if TYPE_CHECKING:
    from rich.console import Console

    from harness.faults.quarantine import QuarantineEntry


def add_bench_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--ignore-quarantine", action="store_true",
                       help="run on hosts the quarantine list (results/quarantine.json) keeps out")


def _expiry(text: str) -> float | None:
    from harness.durations import parse_duration

    if text == "never":
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or never") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration above 0, or never; got {text!r}")
    return seconds


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_results: Path) -> None:
    quarantine = sub.add_parser(
        "quarantine", help="list, add or release hosts kept out of bench runs and campaigns",
        description="The quarantine list (RESULTS/quarantine.json): a host with a severe fault code, or any code "
                    "twice within the window, is kept out until its entry expires or is released.")
    actions = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every entry, active and expired")
    add = actions.add_parser("add", help="quarantine a host by hand")
    add.add_argument("host", help="the host's name in the inventory")
    add.add_argument("--reason", required=True, help="why, one line (shown when bench refuses the host)")
    add.add_argument("--expiry", type=_expiry, default=24 * 3600.0, metavar="DURATION",
                     help="how long: 24h (default), 90m, 2d, ... or never (until released)")
    release = actions.add_parser("release", help="let a host run again (forgets its counted faults too)")
    release.add_argument("host", help="the host's name")
    for action in (listing, add, release):
        action.add_argument("--results", type=Path, default=default_results,
                            help="results folder holding quarantine.json (default results/)")


def _row(entry: QuarantineEntry, state: str) -> list[str]:
    return [entry.host, state, ", ".join(entry.codes) or "-", "; ".join(entry.evidence) or entry.reason,
            entry.since, entry.until or "until released", entry.by]


def _cmd_list(args: argparse.Namespace, console: Console) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.faults.quarantine import QuarantineStore

    store = QuarantineStore(args.results)
    listed = store.load()
    if not listed.entries:
        console.print(f"no host is quarantined ({store.path})", highlight=False)
        return 0
    table = Table(title=f"quarantine ({store.path})")
    for column in ("host", "state", "codes", "evidence", "since", "until", "by"):
        table.add_column(column, overflow="fold")
    for entry in sorted(listed.entries.values(), key=lambda e: (e.expired(), e.since)):
        table.add_row(*_row(entry, "expired" if entry.expired() else "active"),
                      style="dim" if entry.expired() else None)
    Console(width=max(Console().width, 160)).print(table)
    return 0


def _checked_host(name: str) -> str:
    if not name.strip() or any(ord(c) < 32 for c in name):
        raise UserError(f"expected a host name, got {name!r}", field="HOST")
    return name


def _cmd_add(args: argparse.Namespace, console: Console) -> int:
    from harness.faults.quarantine import QuarantineStore

    host = _checked_host(args.host)
    reason = " ".join(args.reason.split())
    if not reason:
        raise UserError("expected a reason (one line: why the host is kept out)", field="--reason")
    store = QuarantineStore(args.results)
    before = store.load().entries.get(host)
    entry = store.add(host, reason, args.expiry)
    replaced = f" (replaces the entry since {before.since})" if before is not None else ""
    console.print(f"quarantined {entry.describe()}{replaced}", highlight=False)
    return 0


def _cmd_release(args: argparse.Namespace, console: Console) -> int:
    from harness.faults.quarantine import QuarantineStore

    store = QuarantineStore(args.results)
    listed = store.load()
    counted = [fault for fault in listed.recent if fault.host == args.host]
    if args.host not in listed.entries and not counted:
        # A typo must not pass for a release: say so, naming what is listed (exit 2).
        names = ", ".join(sorted(listed.entries)) or "none"
        raise UserError(f"{args.host} is not in the quarantine list (listed: {names})", file=str(store.path))
    entry = store.release(args.host)
    if entry is None:
        console.print(f"{args.host} was not quarantined; its {len(counted)} counted fault(s) are forgotten",
                      highlight=False)
        return 0
    state = "expired" if entry.expired() else "active"
    console.print(f"released {args.host} ({state} entry: {entry.describe()})", highlight=False)
    return 0


def cmd_quarantine(args: argparse.Namespace, console: Console) -> int:
    commands = {"list": _cmd_list, "add": _cmd_add, "release": _cmd_release}
    return commands[args.quarantine_command](args, console)
