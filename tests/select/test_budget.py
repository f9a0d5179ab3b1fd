"""Budgets: the ratio whose cost lands closest to a target, by bisection over a monotone cost."""
import pytest

from onnxprune.errors import OnnxPruneError
from onnxprune.select.budget import ratio_for


def test_closest_ratio_for_a_decreasing_cost():
    found = ratio_for(0.5, lambda r: 1 - r, decreasing=True, what="--target-macs")
    assert abs(found.value - 0.5) <= 0.005 and abs(found.ratio - 0.5) <= 0.005


def test_steps_land_on_the_closest_step_either_side():
    cost = lambda r: 1.0 - 0.1 * int(r * 10 + 1e-9)  # noqa: E731 - moves in steps of 0.1 like rounded channel counts
    found = ratio_for(0.62, cost, decreasing=True, what="--target-macs")
    assert found.value == pytest.approx(0.6)


def test_increasing_cost_and_unreachable_target():
    found = ratio_for(2.0, lambda r: 1 / (1 - r), decreasing=False, what="--target-speedup")
    assert found.value == pytest.approx(2.0, rel=0.02)
    with pytest.raises(OnnxPruneError, match="cannot be reached"):
        ratio_for(500.0, lambda r: 1 / (1 - r), decreasing=False, what="--target-speedup")
