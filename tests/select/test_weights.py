"""Weight selection: the per-layer floor is a safety net that never allocates the budget at extreme sparsity."""
from __future__ import annotations

import numpy as np
import pytest

from builders import LENET300
from onnxprune.io.model import load_model
from onnxprune.modes.unstructured import UNSTRUCTURED
from onnxprune.select import weights as select
from onnxprune.select.plan import PruneSettings


@pytest.fixture(scope="module")
def lenet():
    return load_model(LENET300)


def plan_at(model, ratio, **kw):
    s = PruneSettings(mode="unstructured", criterion="magnitude", **kw)
    return select.select_weights(model, UNSTRUCTURED.score(model, None, s).values, "allocation", ratio, s)


def test_the_default_floor_is_unchanged_up_to_97_percent_and_yields_beyond():
    for r in (0.0, 0.5, 0.9, 0.95, 0.97):
        assert select.floor_fraction(r, 0.02) == 0.02
    assert select.floor_fraction(0.98, 0.02) == pytest.approx(2 / 3 * 0.02)
    assert select.floor_fraction(0.999, 0.02) == pytest.approx(2 / 3 * 0.001)
    assert select.floor_fraction(0.5, 0.0) == 0.0


def test_at_98_percent_the_output_layer_keeps_what_its_scores_earn(lenet):
    """LeNet-300-100's output layer (100 → 10, 1,000 weights) was cut to its 2 % floor (20 weights) at 98 %, because
    2 % of every layer was the whole budget; global magnitude keeps far more of it."""
    p = plan_at(lenet, 0.98)
    kept = {n: int(m.sum()) for n, m in p.masks.items()}
    total = sum(m.size for m in p.masks.values())
    assert kept["6.weight"] >= 220  # ≥ 22 % (paper 001, Table 2); was 20
    assert 1 - sum(kept.values()) / total == pytest.approx(0.98, abs=0.002)
    assert all(kept[n] >= np.ceil(select.floor_fraction(0.98, 0.02) * p.masks[n].size) for n in kept)


def test_below_the_cap_plans_equal_the_plain_min_keep_floor(lenet, monkeypatch):
    ref = {r: plan_at(lenet, r).masks for r in (0.9, 0.97)}
    monkeypatch.setattr(select, "floor_fraction", lambda ratio, min_keep: min_keep)
    for r, masks in ref.items():
        old = plan_at(lenet, r).masks
        assert all(np.array_equal(masks[n], old[n]) for n in masks)
    # and the old floor is what starved the output layer at 98 %
    assert int(plan_at(lenet, 0.98).masks["6.weight"].sum()) == 20
