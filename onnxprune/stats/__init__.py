"""Observe: activation statistics from one streaming onnxruntime pass — instrumentation, accumulators, storage.

    from onnxprune.stats import Request, collect
    stats = collect(model, data, [Request(tensor, "channels", {"class_moments"})])
    stats.get(tensor, "f")            # one-way ANOVA F per feature / channel
    stats.save("stats.npz"); Stats.load("stats.npz").check_model(model)

See `collect.py` (passes, labels, graph optimisation), `instrument.py` (in-graph reductions) and
`accumulators.py` (the maths). Which statistics a criterion needs is the criteria's business (`criteria/needs.py`).
"""
from .accumulators import ClassMoments, Contributions, Gram, Moments, ZeroCounts
from .collect import ContribSpec, Request, collect, stream
from .instrument import tensor_infos
from .store import Stats

__all__ = ["ClassMoments", "ContribSpec", "Contributions", "Gram", "Moments", "Request", "Stats", "ZeroCounts",
           "collect", "stream", "tensor_infos"]
