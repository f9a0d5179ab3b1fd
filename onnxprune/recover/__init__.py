"""Recovery: the ONNX graph trainable in torch (`TorchGraph`), label-free distillation (`recover`), Taylor scores."""
from .distill import EpochLog, RecoveryReport, recover
from .taylor import taylor_scores
from .torch_graph import SUPPORTED_OPS, TorchGraph

__all__ = ["SUPPORTED_OPS", "EpochLog", "RecoveryReport", "TorchGraph", "recover", "taylor_scores"]
