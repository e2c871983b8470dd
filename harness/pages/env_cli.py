"""`python -m harness env capture | diff PAGE`: every host's environment, or its drift from a vendor page."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def cmd_env(args: argparse.Namespace, console: Console) -> int:
    from rich.console import Console
    from rich.text import Text

    from harness.core.inventory import load_inventory
    from harness.core.vendor import load_vendor
    from harness.pages import repro
    from harness.pages.parse import read_page

    inventory = load_inventory(args.hosts)
    if args.env_command == "capture":
        vendor = load_vendor(args.vendor) if args.vendor else None
        environments = repro.capture_hosts(inventory, vendor.smi if vendor else None)
        payload = {host: info.model_dump() for host, info in environments.items()}
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        return 0
    page = read_page(args.page)
    vendor = load_vendor(args.vendor) if args.vendor else repro.vendor_for_page(page)
    if vendor is not None and not args.vendor:
        console.print(f"vendor {vendor.name} (it pins {page.software.framework})", highlight=False)
    environments = repro.capture_hosts(inventory, vendor.smi if vendor else None)
    reports = [repro.host_drift(page, env, vendor, host=host) for host, env in environments.items()]
    out = Console(width=max(Console().width, 140))  # tables keep their columns in a log
    for report in reports:
        out.print(repro.drift_table(report, f"{report.host} vs {args.page}"))
    fields = repro.drifted_fields(reports)
    if fields:
        out.print(Text(f"drift: {', '.join(fields)}", style="red"))
        return 1
    out.print(Text(f"no drift: every host matches {args.page} in the checked fields", style="green"))
    return 0
