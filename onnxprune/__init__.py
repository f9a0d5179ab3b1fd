"""onnxprune: post-training pruning of ONNX neural networks."""

__version__ = "0.1.0"
