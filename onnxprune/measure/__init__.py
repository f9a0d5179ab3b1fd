"""Measure: accuracy and agreement, the CI gate, and latency / size / MAC benchmarks in onnxruntime."""
