"""The checks dlbench runs on every built-in, applied to this plugin."""

from dlbench.testing import check_learns, check_round_trip, check_smoke


def test_smoke(tmp_path):
    check_smoke("iris_mlp", tmp_path)


def test_checkpoint_round_trip(tmp_path):
    check_round_trip("iris_mlp", tmp_path)


def test_learns(tmp_path):
    scalars = check_learns("iris_mlp", tmp_path)
    assert scalars["test/acc"] >= 0.8
