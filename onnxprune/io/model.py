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
    fold_constants(model)
    # initializers listed as graph inputs (old exporters) are constants, not user inputs
    user_inputs = [i for i in g.input if i.name not in inits]
    if len(user_inputs) != len(g.input):
        del g.input[:]
        g.input.extend(user_inputs)
    return name_nodes(model)


# Ops never folded: random generators (not deterministic), quantisation (folding a DequantizeLinear of an int8
# weight would silently de-quantise the model), and anything with a subgraph.
_NO_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
            "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "If", "Loop", "Scan", "SequenceMap"}
_FOLD_GROWTH = 1 << 16  # a folded output may exceed its inputs by at most this many elements (no Expand blow-ups)


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """In place: every node of the default domain whose inputs are all constants (Reshape / Unsqueeze / Cast /
    Concat / Transpose / … of initializers, e.g. a converter's `Add(Conv, Reshape(Constant, Constant))` bias) is
    evaluated once and replaced by an initializer named after its output, in graph order until nothing is left.

    Library: onnx's reference evaluator (`onnx.reference.ReferenceEvaluator`), run on one node at a time. It is
    maintained with the ONNX spec itself (every op and opset, including the ones onnxruntime lacks), needs no new
    dependency and no onnxruntime session, and — because it only evaluates — the rest of the model is untouched:
    node order, names, initializer order, value_info and metadata stay as the file gave them, so folding is
    byte-deterministic and a model with nothing to fold is returned byte-identical (the bundled models are). The
    alternatives rebuild the graph: onnx-graphsurgeon's `fold_constants` + `export_onnx` re-orders the initializers
    even of a model with nothing to fold (checked on models/resnet20_cifar10.onnx) and evaluates through
    onnxruntime; onnxslim and onnxoptimizer apply many other rewrites and would be new dependencies.
    """
    g = model.graph
    outputs = graph_outputs(model)
    consts = {t.name: t for t in g.initializer}
    folded: list[int] = []
    for i, node in enumerate(g.node):
        if (node.domain not in ("", "ai.onnx") or node.op_type in _NO_FOLD
                or (not node.input and node.op_type != "Constant")  # Constant: value_ints, value_float, …
                or any(x and x not in consts for x in node.input)
                or any(o in outputs or o in consts for o in node.output)
                or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)):
            continue
        values = _evaluate(model, node, consts)
        if values is None:
            continue
        for name, v in zip(node.output, values):
            if name:
                t = numpy_helper.from_array(np.asarray(v), name)
                g.initializer.append(t)
                consts[name] = t
        folded.append(i)
    if folded:
        keep = [n for i, n in enumerate(g.node) if i not in set(folded)]
        del g.node[:]
        g.node.extend(keep)
        remove_unused_initializers(model)
    return model


def _evaluate(model: onnx.ModelProto, node: onnx.NodeProto, consts: dict) -> list[np.ndarray] | None:
    """The node's outputs from onnx's reference evaluator, or None when it cannot (or should not) be folded."""
    from onnx.reference import ReferenceEvaluator

    feeds = {x: numpy_helper.to_array(consts[x]) for x in node.input if x}
    try:
        ref = ReferenceEvaluator(onnx.helper.make_model(
            onnx.helper.make_graph([node], "fold", [], [onnx.helper.make_empty_tensor_value_info(o)
                                                        for o in node.output if o],
                                   [consts[x] for x in dict.fromkeys(node.input) if x]),
            opset_imports=list(model.opset_import), ir_version=model.ir_version))
        values = ref.run(None, {})
    except Exception:  # noqa: BLE001 - an op the evaluator lacks: leave the node in the graph
        return None
    if node.op_type == "Constant":
        return values if all(isinstance(v, np.ndarray) for v in values) else None
    size_in = sum(int(np.asarray(v).size) for v in feeds.values())
    if any(not isinstance(v, np.ndarray) for v in values) or \
            sum(int(v.size) for v in values) > size_in + _FOLD_GROWTH:
        return None
    return values
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


ZLIB_EXACT_BYTES = 16 << 20  # compressed in full up to this size; above, estimated from evenly spaced blocks
ZLIB_BLOCKS = (32, 1 << 19)  # ... 32 blocks of 512 KB (16 MB): ~1 s instead of ~6-25 s for ResNet-50's 100 MB


def compressed_size(data: bytes, level: int = 6) -> tuple[int, bool]:
    """zlib-compressed size of `data` and whether it is an estimate (the compressed fraction of evenly spaced
    blocks times the length: deterministic, within ~1 % of the full compression on ResNet-50, dense or pruned)."""
    import zlib

    if len(data) <= ZLIB_EXACT_BYTES:
        return len(zlib.compress(data, level)), False
    count, block = ZLIB_BLOCKS
    starts = np.linspace(0, len(data) - block, count).astype(np.int64)
    packed = sum(len(zlib.compress(data[s:s + block], level)) for s in starts)
    return int(round(packed * len(data) / (count * block))), True


def size_report(dense: onnx.ModelProto, pruned: onnx.ModelProto) -> dict[str, int]:
    """Serialized bytes, raw and zlib-compressed (where unstructured zeros pay off), before and after; `zlib_estimated`
    is 1 when a compressed size is estimated from blocks (models over ZLIB_EXACT_BYTES)."""
    d, p = serialize(dense), serialize(pruned)
    (dz, de), (pz, pe) = compressed_size(d, 9), compressed_size(p, 9)
    return {"dense_raw": len(d), "dense_zlib": dz, "pruned_raw": len(p), "pruned_zlib": pz,
            "zlib_estimated": int(de or pe)}


# Files written in this process, in order: a failure after a model was written names them (the CLI adds them to
# its one error line), so a late failure never leaves a written model unannounced.
WRITTEN: list[Path] = []


def check_writable(path: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = (),
                   what: str = "output") -> Path:
    """Fail now, before any work, if `path` could not be written later: it is an input, a directory, or its folder
    (or the nearest existing ancestor that would be created) does not accept a new file. Creates nothing."""
    out = Path(path)
    for src in inputs:
        if Path(src).exists() and out.exists() and out.resolve() == Path(src).resolve():
            raise OnnxPruneError(f"refusing to overwrite the input {src}; choose another -o path")
    if out.is_dir():
        raise OnnxPruneError(f"{out}: is a directory; the {what} must be a file path")
    if out.exists() and not os.access(out, os.W_OK):
        raise OnnxPruneError(f"{out}: not writable ({what})")
    folder = out.parent if str(out.parent) else Path(".")
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OnnxPruneError(f"{out}: cannot create the {what} there ({probe} is not a directory)")
    try:  # the real test (access() is not reliable for root, /proc, read-only mounts): create and remove a file
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".onnxprune-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OnnxPruneError(f"{out}: cannot write the {what} in {probe} ({e.strerror or type(e).__name__})") from None
    return out


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = (),
               overwrite: bool = True) -> Path:
    """Write atomically (temp file + rename); refuse to write over any of `inputs`. An OS error (disk full, no
    permission) is a one-line OnnxPruneError and leaves nothing behind.

    Models over 2 GB are written with external data beside the output file.
    """
    out = Path(path)
    for src in inputs:
        if Path(src).exists() and out.exists() and out.resolve() == Path(src).resolve():
            raise OnnxPruneError(f"refusing to overwrite the input model {src}; choose another -o path")
    if out.exists() and not overwrite:
        raise OnnxPruneError(f"{out} exists; pass --force to overwrite it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if model.ByteSize() > TWO_GB:
            onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=out.name + ".data")
            WRITTEN.append(out)
            return out
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as e:
        raise OnnxPruneError(f"{out}: cannot write the model ({e.strerror or type(e).__name__})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(serialize(model))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, out)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OnnxPruneError(f"{out}: cannot write the model ({e.strerror or type(e).__name__})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    WRITTEN.append(out)
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
