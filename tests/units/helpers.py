"""Shared test helpers: run a model, compare two models, tiny fixed architectures like the bundled ones."""
from __future__ import annotations

import numpy as np
import onnx
from units.generate import Builder

from onnxprune.io.runtime import make_session


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = make_session(model, threads=1)
    return sess.run(None, {sess.get_inputs()[0].name: x})


def rel_err(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(u - v).max() / max(np.abs(v).max(), 1e-6)) for u, v in zip(a, b))


def sample_input(model: onnx.ModelProto, rng: np.random.Generator, batch: int = 2) -> np.ndarray:
    dims = [d.dim_value if d.HasField("dim_value") else batch for d in model.graph.input[0].type.tensor_type.shape.dim]
    return rng.standard_normal(dims).astype(np.float32)


def _finish(b: Builder) -> onnx.ModelProto:
    return b.model(b.head())


def tiny_resnet(seed: int = 0) -> onnx.ModelProto:
    b = Builder(np.random.default_rng(seed))
    b.stem()
    b.residual()
    b.residual()
    b.residual()
    return _finish(b)


def tiny_densenet(seed: int = 0) -> onnx.ModelProto:
    b = Builder(np.random.default_rng(seed))
    b.stem()
    b.dense()
    b.pool()
    b.dense()
    return _finish(b)


def tiny_mobilenet(seed: int = 0) -> onnx.ModelProto:
    b = Builder(np.random.default_rng(seed))
    b.stem()
    b.depthwise_se()
    b.depthwise_se()
    return _finish(b)


def tiny_lenet5bn(seed: int = 0) -> onnx.ModelProto:
    b = Builder(np.random.default_rng(seed), channels=1, hw=12)
    b.stem()
    b.pool()
    b.conv_chain()
    b.pool()
    f = b.op("Flatten", [b.x], axis=1)[0]
    h = b.op("Relu", [b._gemm(f, b.c * b.hw * b.hw, 8)])[0]
    return b.model(b._gemm(h, 8, 5))


TINY = {"resnet": tiny_resnet, "densenet": tiny_densenet, "mobilenet": tiny_mobilenet, "lenet5bn": tiny_lenet5bn}
