"""Pruning criteria: pure functions of (weights, statistics) → scores, one module per criterion.

Higher score = more important = kept longer. Nothing here touches ONNX or onnxruntime; the pipelines
(`unstructured.py`, `structured.py`) fetch weights and statistics, broadcast per-feature statistics to weight
layouts, and call these. `ranking.py` holds the percentile-rank mixing shared by the hybrid criteria.
"""
