"""Units: what can be pruned: weight layers, fully connected neurons, coupled channel groups (with the one table
of per-op channel rules), the chain after a layer, and parameter / MAC counts."""
