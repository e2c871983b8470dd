#!/usr/bin/env bash
# Stops the SSH test hosts started by tests/infra/setup.sh (by pidfile).
# dockerd, the base image, the generated keys and the Slurm cluster are left in place.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TESTHOSTS=$PWD/.cache/testhosts

mkdir -p .cache
exec 9>.cache/setup.lock
flock 9

for name in node1 node2; do
    dir=$TESTHOSTS/$name
    pid=$(cat "$dir/sshd.pid" 2>/dev/null || true)
    # Only a live sshd started with this node's config; a stale pid may be reused.
    if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/sshd_config"; then
        kill "$pid"
        for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "teardown: $name stopped sshd (pid $pid)"
    else
        echo "teardown: $name sshd not running"
    fi
    rm -f "$dir/sshd.pid"
done

# Slurm stays up on purpose: it is machine-wide (one cluster per machine), and teardown
# frees this clone's test hosts for another clone, whose setup.sh then simply reuses it.
# A full stop: bash tests/infra/slurm.sh stop
echo "teardown: slurm left running (machine-wide; bash tests/infra/slurm.sh stop stops it)"
