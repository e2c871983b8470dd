"""Benchmark harness for AI accelerators: controller side."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
