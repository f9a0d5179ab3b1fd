"""Activation statistics from one streaming onnxruntime pass: instrumentation, online accumulators, storage.

    from onnxprune.stats import Request, collect, default_requests
    stats = collect(model, data, default_requests(model, ["fscreen", "apoz"]))
    stats.get(tensor, "f")            # one-way ANOVA F per feature / channel
    stats.save("stats.npz"); Stats.load("stats.npz").check_model(model)

See `collect.py` (passes, labels, graph optimisation), `instrument.py` (in-graph reductions),
`accumulators.py` (the maths) and `requests.py` (which tensors each criterion needs).
"""
from .accumulators import ClassMoments, Contributions, Gram, Moments, ZeroCounts
from .collect import Request, collect, stream
from .requests import CRITERIA, default_requests
from .store import Stats

__all__ = [
           "CRITERIA",
           "ClassMoments",
           "Contributions",
           "Gram",
           "Moments",
           "Request",
           "Stats",
           "ZeroCounts",
           "collect",
           "default_requests",
           "stream",
]
