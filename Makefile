# make bench CASE=resnet50 VENDOR=nvidia CONFIG=2x8 [HOSTS=hosts.yaml] [FIX_HP="bs=256,lr=0.72"] [DRY_RUN=1]
# make campaign SUITE=suites/nightly.yaml [RESUME=1]
CASE ?= resnet50
VENDOR ?= cpu
CONFIG ?= 1x1
HOSTS ?= hosts.yaml
FIX_HP ?=
ACCEL ?=
DRY_RUN ?=
REAL_DATA ?=
RUN_ID ?=
REPRO ?=
ALLOW_DRIFT ?=
IGNORE_QUARANTINE ?=
PYTEST_ARGS ?=
SUITE ?= suites/cpu-smoke.yaml
RESUME ?=
VERBOSE ?=
PY := .venv/bin/python

.PHONY: setup bench campaign test test-fast lint report clean help

help:
	@$(PY) -m harness --help 2>/dev/null || echo "run 'make setup' first"

# venv, Docker engine, local base image: what `make bench` needs on this machine.
setup:
	@bash scripts/setup.sh

# The command on one line: make's own echo would show the recipe's `\` and the empty $(if)s.
BENCH_CMD = $(strip $(PY) -m harness bench --case '$(CASE)' --vendor '$(VENDOR)' --config '$(CONFIG)' \
  --hosts '$(HOSTS)' $(if $(FIX_HP),--fix-hp '$(FIX_HP)') $(if $(ACCEL),--accelerator '$(ACCEL)') \
  $(if $(REAL_DATA),--real-data) $(if $(RUN_ID),--run-id '$(RUN_ID)') $(if $(DRY_RUN),--dry-run) \
  $(if $(REPRO),--repro '$(REPRO)') $(if $(ALLOW_DRIFT),--allow-drift) $(if $(IGNORE_QUARANTINE),--ignore-quarantine))
CAMPAIGN_CMD = $(strip $(PY) -m harness campaign run '$(SUITE)' $(if $(RESUME),--resume))

bench: setup
	$(info $(BENCH_CMD))
	@$(BENCH_CMD)

# A suite of jobs, unattended: validated first, locked hosts, retries, state for RESUME=1, summary.
campaign: setup
	$(info $(CAMPAIGN_CMD))
	@$(CAMPAIGN_CMD)

# Everything the tests need (setup + two SSH test hosts), then the whole suite on two
# pytest-xdist workers: every test of the SSH test hosts on one of them, in order (they share
# the hosts), the Slurm cluster's in order beside them (tests/conftest.py groups both), and
# everything else wherever a worker is free.
test:
	@bash tests/infra/setup.sh
	@$(MAKE) --no-print-directory lint
	$(PY) -m pytest -ra -n 2 --dist loadgroup --durations=25 $(PYTEST_ARGS) tests

# For development: every test that needs no test hosts, no Docker and no Slurm and starts
# no training processes (markers that tests/conftest.py applies from the fixtures a test
# uses: hosts, slurm, payload), on two pytest-xdist workers; needs only the venv.
test-fast:
	$(PY) -m pytest -ra -n 2 -m 'not hosts and not slurm and not payload' $(PYTEST_ARGS) tests

# ruff over the code and tests; mypy (settings in pyproject.toml) over harness/ and cases/.
lint:
	$(PY) -m ruff check harness cases tests bench
	$(PY) -m mypy harness cases

report:
	$(PY) -m harness report results $(if $(VERBOSE),--verbose)

clean:
	$(PY) -m harness clean --hosts '$(HOSTS)'
