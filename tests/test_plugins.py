"""Registry-driven checks: every installed plugin gets the same smoke, checkpoint and learning tests."""

from __future__ import annotations

import pytest

from dlbench.core import registry
from dlbench.testing import check_learns, check_predict, check_round_trip, check_smoke

PLUGINS = [e.name for e in registry.entries(registry.PLUGINS) if not e.broken]


def test_no_builtin_is_broken():
    broken = [f"{e.name}: {e.error}" for e in registry.entries(registry.PLUGINS) if e.broken and e.dist == "dlbench"]
    assert not broken


@pytest.mark.parametrize("name", PLUGINS)
def test_smoke(name, tmp_path):
    check_smoke(name, tmp_path)


@pytest.mark.parametrize("name", PLUGINS)
def test_checkpoint_round_trip(name, tmp_path):
    check_round_trip(name, tmp_path)


@pytest.mark.parametrize("name", PLUGINS)
def test_predict_round_trips_the_test_inputs_written_to_files(name, tmp_path):
    check_predict(name, tmp_path)


@pytest.mark.parametrize("name", PLUGINS)
def test_learns_beyond_baseline(name, tmp_path):
    check_learns(name, tmp_path)
