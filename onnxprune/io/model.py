"""Loading, normalising, validating and saving ONNX models.

Every command loads through `load_model`, so downstream code can rely on one canonical form: weights are
initializers (never `Constant` nodes or `Identity` aliases of constants), external data is resolved, and the
graph is topologically sorted as the file gave it. Saving is atomic so a failure never leaves a half-written file,
and never targets the input path unless asked.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import OnnxPruneError
from .graph import graph_outputs, name_nodes, remove_unused_initializers

TWO_GB = 2**31 - 1


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and normalise an ONNX file; raise a one-line OnnxPruneError for anything that is not one."""
    p = Path(path)
    if not p.exists():
        raise OnnxPruneError(f"{p}: no such file")
    if not p.is_file():
        raise OnnxPruneError(f"{p}: not a file")
    try:
        model = onnx.load(str(p), load_external_data=True)
    except Exception as e:  # protobuf raises DecodeError, external data raises assorted errors
        raise OnnxPruneError(f"{p}: not a readable ONNX model ({type(e).__name__}: {_first_line(e)})") from None
    if not model.graph.node:
        raise OnnxPruneError(f"{p}: not an ONNX model (no graph nodes; is the file truncated or of another type?)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise OnnxPruneError(f"{p}: invalid ONNX model: {_first_line(e)}") from None
    return normalise(model)


def normalise(model: onnx.ModelProto) -> onnx.ModelProto:
    """In place: Constant nodes become initializers, Identity-of-constant nodes are folded away, and every node gets
    a unique stable name (`graph.name_nodes`) that every later stage uses."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            t = numpy_helper.to_array(node.attribute[0].t)
            g.initializer.append(numpy_helper.from_array(t, node.output[0]))
            inits.add(node.output[0])
        elif node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in graph_outputs(model):
            src = next(t for t in g.initializer if t.name == node.input[0])
            alias = onnx.TensorProto()
            alias.CopyFrom(src)
            alias.name = node.output[0]
            g.initializer.append(alias)
            inits.add(node.output[0])
        else:
            keep.append(node)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)
        remove_unused_initializers(model)
    # initializers listed as graph inputs (old exporters) are constants, not user inputs
    user_inputs = [i for i in g.input if i.name not in inits]
    if len(user_inputs) != len(g.input):
        del g.input[:]
        g.input.extend(user_inputs)
    return name_nodes(model)














def model_hash(model: onnx.ModelProto) -> str:
    """A short content hash, so cached statistics can be matched to the model they came from."""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()[:16]


def validate(model: onnx.ModelProto, *, load_in_runtime: bool = True) -> onnx.ModelProto:
    """Full checker + strict shape inference (+ onnxruntime load); returns the shape-inferred model.

    Stale value_info is dropped first: after a rewrite the old shapes are wrong and would fail strict inference.
    """
    del model.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        onnx.checker.check_model(inferred, full_check=True)
    except Exception as e:
        raise OnnxPruneError(f"rewritten model is invalid: {_first_line(e)}") from None
    if load_in_runtime:
        from .runtime import make_session

        try:
            make_session(inferred)
        except Exception as e:
            raise OnnxPruneError(f"rewritten model does not load in onnxruntime: {_first_line(e)}") from None
    return inferred


def serialize(model: onnx.ModelProto) -> bytes:
    """Deterministic bytes: same model, same bytes."""
    return model.SerializeToString(deterministic=True)


def size_report(dense: onnx.ModelProto, pruned: onnx.ModelProto) -> dict[str, int]:
    """Serialized bytes, raw and zlib-compressed (where unstructured zeros pay off), before and after."""
    import zlib

    d, p = serialize(dense), serialize(pruned)
    return {"dense_raw": len(d), "dense_zlib": len(zlib.compress(d, 9)),
            "pruned_raw": len(p), "pruned_zlib": len(zlib.compress(p, 9))}


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = (),
               overwrite: bool = True) -> Path:
    """Write atomically (temp file + rename); refuse to write over any of `inputs`.

    Models over 2 GB are written with external data beside the output file.
    """
    out = Path(path)
    for src in inputs:
        if Path(src).exists() and out.exists() and out.resolve() == Path(src).resolve():
            raise OnnxPruneError(f"refusing to overwrite the input model {src}; choose another -o path")
    if out.exists() and not overwrite:
        raise OnnxPruneError(f"{out} exists; pass --force to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > TWO_GB:
        onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=out.name + ".data")
        return out
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(serialize(model))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
