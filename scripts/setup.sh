#!/usr/bin/env bash
# What `make bench` needs on this machine: Docker (docker.io, a running engine),
# debootstrap, the venv and the local base image; nothing that only the tests use
# (tests/infra/setup.sh adds those). Idempotent and quick when done.
#   bash scripts/setup.sh            # set up what is missing
#   bash scripts/setup.sh --check    # say what would be done (exit 3 if anything), change nothing
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup-steps.sh
setup_args "$@"
setup_bench
setup_done
