#!/usr/bin/env bash
# What `make bench` needs on this machine: system packages, the venv, a running
# Docker engine and the local base image. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash tests/infra/setup.sh --no-test-hosts
