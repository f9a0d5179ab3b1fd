"""Channel scores of coupled groups: BN γ, filter norms, and one scale across groups for global selection."""
import numpy as np
from onnx import numpy_helper

from onnxprune.criteria import channels
from onnxprune.units.groups import analyse
from units.generate import Builder


def _stem_group():
    b = Builder(np.random.default_rng(0))
    b.stem()
    c = b.c
    model = b.model(b.head())
    g = next(g for g in analyse(model) if g.prunable and g.size == c)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    return model, g, inits, nodes[g.producers[0]], nodes[g.bn[0]], c


def test_bn_gammas_and_filter_norms_read_the_group_members():
    model, g, inits, conv, bn, c = _stem_group()
    np.testing.assert_allclose(channels.filter_norms(model, g, 1),
                               np.abs(inits[conv.input[1]].astype(np.float64)).reshape(c, -1).sum(1), rtol=1e-12)
    np.testing.assert_allclose(channels.filter_norms(model, g, 2),
                               np.sqrt((inits[conv.input[1]].astype(np.float64) ** 2).reshape(c, -1).sum(1)), rtol=1e-12)
    (gamma,) = channels.bn_gammas(model, g)
    np.testing.assert_allclose(gamma, np.abs(inits[bn.input[1]]), rtol=1e-6)


def test_bn_criterion_ranks_by_gamma_and_l1_by_normalised_filter_norm():
    model, g, inits, conv, bn, c = _stem_group()
    groups = [g]
    (bn_scores,) = channels.scores("bn", model, groups, None, 0.4, 1.0)
    np.testing.assert_allclose(bn_scores, np.abs(inits[bn.input[1]]), rtol=1e-6)
    (l1_scores,) = channels.scores("l1", model, groups, None, 0.4, 1.0)
    norms = np.abs(inits[conv.input[1]].astype(np.float64)).reshape(c, -1).sum(1)
    np.testing.assert_allclose(l1_scores, norms / norms.mean(), rtol=1e-12)  # mean-normalised: comparable across groups
