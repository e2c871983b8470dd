"""A container's CPU throttled by its rank's progress, for the bisect test: the
throttle must be in place before the rank's timed all-reduces start, and with
torch imported and the process group formed that is a fifth of a second after
the rank's `config` event. So the CFS bandwidth knobs of the container's cgroup
are written directly (what `docker update --cpu-quota` writes, without its round
trip through dockerd and runc: 30 ms to over 250 ms here under load), from a
thread that reads the rank's event files every 2 ms."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from test_faults import docker

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _docker(*args: str) -> str:
    """docker's answer; "" where it failed (a container that just ended)."""
    done = docker(*args)
    return done.stdout if done.returncode == 0 else ""


@dataclass(frozen=True)
class CpuLimit:
    """The CFS period and quota of one container's cgroup (v1: cpu.cfs_*_us, v2: cpu.max)."""

    folder: Path
    unified: bool

    @classmethod
    def of(cls, container: str) -> CpuLimit | None:
        """The container's knobs, found from its first process's /proc/<pid>/cgroup; None once it is gone."""
        pid = _docker("inspect", "--format", "{{.State.Pid}}", container).strip()
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines() if pid not in ("", "0") else []
        except OSError:
            return None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "cpu" in controllers.split(","):
                for mount in ("cpu", "cpu,cpuacct"):
                    if (CGROUP_ROOT / mount / path.lstrip("/") / "cpu.cfs_quota_us").is_file():
                        return cls(CGROUP_ROOT / mount / path.lstrip("/"), unified=False)
            if controllers == "" and (CGROUP_ROOT / path.lstrip("/") / "cpu.max").is_file():
                return cls(CGROUP_ROOT / path.lstrip("/"), unified=True)
        return None

    def set(self, period_us: int, quota_us: int | None) -> None:
        """quota_us of every period_us of CPU time; None: no limit."""
        if self.unified:
            (self.folder / "cpu.max").write_text(f"{quota_us or 'max'} {period_us}")
            return
        (self.folder / "cpu.cfs_quota_us").write_text("-1")  # a period is changed only while unlimited
        (self.folder / "cpu.cfs_period_us").write_text(str(period_us))
        if quota_us is not None:
            (self.folder / "cpu.cfs_quota_us").write_text(str(quota_us))


@dataclass
class Throttled:
    """What throttled_by_progress did: container id -> run id of those throttled at
    `sweep_event` before their rank ended, and each change as "<run id> <event> at <ms>"."""

    during_sweep: dict[str, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)


@dataclass
class _Watched:
    run_id: str
    log_dir: Path
    limit: CpuLimit
    applied: str | None = None


def last_event(log_dir: Path, keys: list[str]) -> str | None:
    """The latest of these event keys (in their order) that a rank in log_dir has written."""
    text = ""
    for events in log_dir.glob("events_rank*.log"):
        try:
            text += events.read_text(errors="replace")
        except OSError:
            continue
    reached = [key for key in keys if f'"key": "{key}"' in text]
    return reached[-1] if reached else None


@contextmanager
def throttled_by_progress(host: str, prefix: str, by_event: dict[str, tuple[int, int | None]],
                          sweep_event: str) -> Iterator[Throttled]:
    """Every container of `host` (label bench.host) whose run id starts with prefix,
    throttled as by_event says (event key -> CFS period and quota in µs, None: no
    limit) once its rank has written that event. Containers are found every 50 ms
    (a run's container runs seconds before its rank's first event)."""
    stop = threading.Event()
    done = Throttled()
    watched: dict[str, _Watched] = {}
    lock = threading.Lock()
    keys = list(by_event)

    def discover() -> None:
        while not stop.is_set():
            listed = _docker("ps", "--filter", "status=running", "--filter", f"label=bench.host={host}",
                             "--format", '{{.ID}} {{.Label "bench.run_id"}}').split("\n")
            for line in listed:
                parts = line.split()
                if len(parts) != 2 or not parts[1].startswith(prefix) or parts[0] in watched:
                    continue
                source = _docker("inspect", "--format",
                                 '{{range .Mounts}}{{if eq .Destination "/bench/logs"}}{{.Source}}{{end}}{{end}}',
                                 parts[0]).strip()
                limit = CpuLimit.of(parts[0])
                if source and limit is not None:
                    with lock:
                        watched[parts[0]] = _Watched(parts[1], Path(source), limit)
            stop.wait(0.05)

    def throttle() -> None:
        while not stop.is_set():
            with lock:
                now_watched = list(watched.items())
            for container, seen in now_watched:
                event = last_event(seen.log_dir, keys)
                if event is None or event == seen.applied:
                    continue
                try:
                    seen.limit.set(*by_event[event])
                except OSError:  # the container is gone
                    seen.applied = event
                    continue
                seen.applied = event
                done.changes.append(f"{seen.run_id} {event} at {time.time() * 1000:.0f}")
                if event == sweep_event:
                    done.during_sweep[container] = seen.run_id
            stop.wait(0.002)

    threads = [threading.Thread(target=target, daemon=True) for target in (discover, throttle)]
    for thread in threads:
        thread.start()
    try:
        yield done
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
