"""Notifications: a JSON summary POSTed to the suite's `notify.webhook` and/or
passed on stdin to `notify.command`, on each failed job and at the end. A
notification that fails is logged and never stops the campaign."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from harness.campaign.suite import Notify


class Notifier:
    def __init__(self, settings: Notify, warn: Callable[[str], None]) -> None:
        self.settings = settings
        self._warn = warn

    @property
    def enabled(self) -> bool:
        return bool(self.settings.webhook or self.settings.command)

    def send(self, payload: dict[str, Any]) -> list[str]:
        """Deliver to every configured target; the problems, each also warned about."""
        body = json.dumps(payload, default=str).encode()
        problems = []
        if self.settings.webhook:
            problems += self._post(self.settings.webhook, body)
        if self.settings.command:
            problems += self._run(self.settings.command, body)
        for problem in problems:
            self._warn(f"notification not delivered: {problem}")
        return problems

    def _post(self, url: str, body: bytes) -> list[str]:
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "bench-campaign"})
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                response.read(4096)
        except urllib.error.HTTPError as exc:
            return [f"webhook {url}: HTTP {exc.code} {exc.reason}"]
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return [f"webhook {url}: {reason}"]
        return []

    def _run(self, argv: list[str], body: bytes) -> list[str]:
        try:
            proc = subprocess.run(argv, input=body, capture_output=True, timeout=self.settings.timeout, check=False)
        except subprocess.TimeoutExpired:
            return [f"command {argv[0]}: no answer within {self.settings.timeout:.0f} s"]
        except OSError as exc:
            return [f"command {argv[0]}: {exc.strerror or exc}"]
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()[-200:]
            return [f"command {argv[0]} exited {proc.returncode}: {tail}"]
        return []
