"""Score: every criterion the product uses, one module each, and their layout on the units being pruned.

Higher score = more important = kept longer. The per-criterion modules (magnitude, bn_scale, fscreen, apoz,
relative_importance, activation_aware, ranking) are pure functions of arrays; `weights.py` lays them out on every
candidate weight (unstructured), `channels.py` aggregates them over coupled channel groups (structured), and
`needs.py` says which statistics each criterion asks the statistics engine for.
"""
