"""What the campaign tests share: a suite file writer and the check of a suite
against the golden 2x2 inventory (nothing is contacted)."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness import REPO_ROOT
from harness.backends.registry import make_backend
from harness.campaign.check import check_suite
from harness.campaign.suite import load_suite
from harness.core.inventory import load_inventory

GOLDEN_HOSTS = REPO_ROOT / "tests" / "golden" / "hosts_2x2.yaml"
TINY = "bs=2,image_size=32,num_classes=10,max_steps=2"


def write_suite(folder: Path, jobs: list[dict], **top: object) -> Path:
    data = {"name": "nightly", "hosts": str(GOLDEN_HOSTS), "defaults": {"vendor": "cpu"}, **top, "jobs": jobs}
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def checked(path: Path) -> list:
    loaded = load_suite(path)
    inventory = load_inventory(loaded.inventory)
    return check_suite(loaded, inventory, make_backend(inventory))
