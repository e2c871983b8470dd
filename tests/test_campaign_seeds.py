"""Each repeat of a campaign trains with a fresh seed: planned per unit, kept in the
state (a resumed attempt reuses it), on every node's command line (cases.run
--seed, which the config event and so results.json's effective_config record:
tests/cases/test_cases_loss.py), and never in fix_hp, so the repeats stay one job in
the history. A fix_hp that sets `seed` pins it. The suite's `noise:` sets N and k."""

from __future__ import annotations

from pathlib import Path

import pytest
from campaignkit import TINY, checked, write_suite

from harness.backends.registry import make_backend
from harness.campaign.runner import _units
from harness.campaign.state import CampaignState, StateStore
from harness.campaign.suite import SuiteError, load_suite
from harness.core.inventory import load_inventory
from harness.core.runner import build_plan


def test_every_repeat_gets_its_own_seed_on_the_command_line_and_in_the_state(tmp_path: Path) -> None:
    path = write_suite(tmp_path, [{"case": "resnet50", "config": "1x2", "fix_hp": TINY, "repeats": 3},
                                  {"case": "resnet50", "config": "1x2", "fix_hp": f"{TINY},seed=7", "repeats": 2}])
    planned = checked(path)
    units = _units(planned)
    free, pinned = units[:3], units[3:]
    seeds = [unit.seed for unit in free]
    assert all(isinstance(seed, int) for seed in seeds) and len(set(seeds)) == 3
    assert [unit.seed for unit in pinned] == [None, None]  # the suite pinned seed=7 itself
    assert len({u.seed for u in _units(planned)[:3]} | set(seeds)) == 6  # a new campaign: new seeds

    inventory = load_inventory(load_suite(path).inventory)
    backend = make_backend(inventory)
    for unit in free:
        job = planned[0].make_job(f"night-r{unit.repeat}", unit.seed)
        assert job.fix_hp == TINY and job.seed == unit.seed  # not a hyper-parameter: the same job in history
        argv = build_plan(job, inventory, backend).render()
        assert f"--seed {unit.seed}" in argv and "seed=" not in argv
    job = planned[1].make_job("pinned", pinned[0].seed)
    assert "--seed" not in build_plan(job, inventory, backend).render() and "seed=7" in (job.fix_hp or "")

    store = StateStore(tmp_path)
    store.save(CampaignState(name="nightly", stamp="s", suite=str(path), inventory="", units=units))
    assert [unit.seed for unit in store.load().units] == [*seeds, None, None]


def test_the_suite_sets_n_and_k_of_the_noise_rule(tmp_path: Path) -> None:
    path = write_suite(tmp_path, [{"case": "resnet50", "config": "1x2"}], noise={"runs": 4, "k": 2.5})
    rule = load_suite(path).suite.noise.rule()
    assert (rule.runs, rule.k) == (4, 2.5)
    assert load_suite(write_suite(tmp_path, [{"case": "resnet50", "config": "1x2"}])).suite.noise.rule().runs == 10
    with pytest.raises(SuiteError, match="noise.k"):
        load_suite(write_suite(tmp_path, [{"case": "resnet50", "config": "1x2"}], noise={"k": 0}))
