"""Recovery: train a pruned ONNX model against its dense original (label-free distillation), weights written back.

`recover(pruned, dense, data, ...)` runs the pruned graph in torch (`TorchGraph`, initializers as parameters), the
dense graph in onnxruntime as the teacher on the *same* augmented batch, and minimises

    KL(softmax(z_t/T) ‖ softmax(z_s/T))·T²                            (always)
  + feature_weight · Σ_f mean((s_f − t_f[kept])²) / var(t_f[kept])      (feature targets, see `match_features`)
  + CE(z_s, y)                                                          (only with labels=True and labelled data)
  + activation_l1 · mean|a| of the prunable units' outputs              (paper 003's pruning-aware training)

Structure: `train_step` is one optimiser step (a pure function of student, optimiser, masks, batch and teacher
logits — reusable by a data-parallel driver); `Distiller` holds one run's fixed parts (split, augmentation, teacher)
and a replaceable student, and runs epochs of `train_step`; `recover` is one Distiller run with a cosine schedule,
held-out early stopping and BN re-estimation; training-time pruning (`workflows/iterative.py`) is another, which
swaps the student between epochs.

Design decisions (measured on ResNet-20 / LeNet-300-100, see the module README_decision.md and the issue note):

* Teacher in onnxruntime: 3× faster than the same graph in torch without gradient on this CPU (0.038 s vs 0.12 s a
  128-image batch of the dense ResNet-20, 2 threads), and it is the exact model users deploy.
* Feature targets (optional, `feature_weight` > 0): structured pruning removes channels from the residual stream
  too, so no intermediate tensor keeps its shape. The kept channels are found by correlating the pruned and dense
  activations of the same-named tensor on one un-augmented batch (Hungarian assignment). Tensors used: branch
  points (tensors read by ≥ 2 nodes — the residual stream) whose matched channels correlate ≥ `min_corr` on
  average (ResNet-20 at 50 %: 1.00 after the stem, falling to 0.52 in the last stage; 7 of 9 pass at 0.7).
* Time: torch on one thread by default (`threads=1`). On the shared 2-core machine two torch threads cost 8× the
  CPU time of one for the same forward+backward (spin-waiting under contention); onnxruntime's teacher threads do
  not spin. Channels-last inputs make torch's CPU convolutions ~1.7× faster.
  On CPUs with AMX bf16 tiles, conv nets train under bfloat16 autocast (`precision="auto"`, see `use_bf16`):
  the student's forward + backward of a ResNet-20 at 50 % step costs 82 instead of 124 ms (64 images), the whole
  22-epoch recovery 233 instead of 276 CPU-s (the onnxruntime teacher, ~37 ms a step, stays float32), at equal
  accuracy (77.98 vs 77.72 %).
* Unstructured zeros: every ≥ 2-D trainable initializer with exact zeros at the start gets a mask; gradients are
  masked and the mask is re-applied after every optimiser step, so zeros stay exactly zero.
* BatchNorm alignment before training (`bn_align`, default on): the pruned, re-fitted model's running statistics
  are the dense model's and no longer describe its BN inputs (re-estimating them alone takes ResNet-20 at 50 %
  from 58.6 % to 50.9 %), so switching to batch statistics would start training from a broken model. `_align_bn`
  sets running stats to the true input statistics and rescales γ, β so the inference function is unchanged.
  (`bn_mode="frozen"` — BN in inference mode throughout — diverged on ResNet-20 even at lr 0.003.)
* BatchNorm: train-mode batch statistics while training (torch momentum 0.1), then running statistics re-estimated
  in one pass over the training split (cumulative average over batches, all BNs in batch-statistics mode, as
  torch's momentum=None) *with the training augmentation*: the weights co-adapt to the statistics of what they
  were trained on. Measured on the dense ResNet-20 (85.17 %): re-estimating on the 5k un-augmented calibration
  images gives 82.57 %, on the same images with crop + flip 85.32 %; after 10 recovery epochs, un-augmented
  re-estimation cost 3.6 points of held-out agreement against the EMA statistics. With `bn_reestimate=None`
  (auto, default) the re-estimated statistics are kept only if the held-out agreement does not drop; True
  always keeps them; False keeps the training EMA.
* Augmentation (auto): a single 4-D input with H, W ≥ 16 gets random crops of the zero-padded image; colour images
  (3 channels) pad by H/8 (4 px at 32×32) and flip horizontally; other channel counts (MNIST-like grey digits,
  28×28) get only ±2-px shifts and no flip, since mirrored digits are different symbols and a 4-px shift moves
  a 20-px digit off its centred box. Anything else: no augmentation.
* Deterministic: seeded numpy generator for splits / order / augmentation, torch seed, torch and onnxruntime
  threads fixed for the call (torch's thread count restored afterwards) → same seed + threads = same bytes.
* Schedule: linear warm-up then cosine to zero over the planned steps; with a time budget the number of epochs
  is re-planned after the first epoch so that the cosine completes inside the budget. SGD (Nesterov 0.9,
  wd 5e-4 on ≥ 2-D weights), lr 0.03, batch 64 were the best of what was measured (see below).

Measured (5,000 CIFAR-10 calibration images, label-free, one torch thread, CPU-s of the whole call; top-1 on the
10,000 CIFAR-10 eval images; the machine was shared, so wall times were 2-3× the CPU times):
  ResNet-20 50 % (58.56 % after prune + re-fit): 10 ep bs128 lr 0.03: 75.5 % (124 CPU-s); 20 ep bs32: 77.8 %
  (218); 22 ep bs64: 78.5 % (249); 25 ep bs64: 78.6 % (262). At 24 ep bs64: lr 0.06 78.3 %, T = 2 77.6 %,
  mixup 77.9 %, + CE on labels 77.9 %. CutMix (10 ep) 73.2 % vs 75.5 %; feature targets (10 ep, train-mode BN)
  72.6 % vs 73.0 %; AdamW 1e-3 no better than SGD after 3 epochs; BN frozen: diverged.
  ResNet-20 60 % (47.29 %): 22 ep bs64: 76.1 % (218 CPU-s); 30 ep bs64: 77.0 % (287 CPU-s).
  LeNet-300-100 (MNIST, 10,000 calibration images, ±2-px shifts): 95 %: 97.87 → 98.78 % (20 ep, lr 0.1,
  7.5 CPU-s); 97 %: 96.12 → 98.34 % (40 ep, lr 0.1, 15.4 CPU-s).
  Later (current pruning code, 58.29 % after prune + re-fit at 50 %; docs/BENCHMARKS.md, Recovery I b), 22 ep:
  float32 77.72 % (276 CPU-s), bf16 autocast 77.98 % (233 CPU-s, same load). Not better, so not adopted: EMA of
  the weights (decay 0.998) 77.91 %, lr 0.01 77.25 %, logit MSE instead of KL 77.72 %, wd 1e-4 78.08 % (noise).
  `compress --ratio 0.5 --recover-epochs 28` (bf16, 267 CPU-s of recovery): 79.44 %; 60 %, 35 ep (bf16,
  293 CPU-s): 77.01 %; 60 %, 45 / 72 ep: 77.53 % / 78.62 and 78.39 % (seeds 0, 1; 275 / ~430 CPU-s); 50 %,
  72 / 120 ep: 80.72 % / 81.47 % (451 / 773 CPU-s) — past the 28–30-epoch plateau (79.2–79.4 %), longer recovery
  still pays; 45k train images + labels, 29 ep: 84.19 % (1,786 CPU-s).
"""
from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from ..errors import OnnxPruneError
from .parallel import current as data_parallel
from .torch_graph import TorchGraph

if TYPE_CHECKING:  # only for the annotation; any object with the same attributes works
    from ..io.data import Dataset  # noqa: F401

_NP_DTYPE = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
             onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.UINT8: np.uint8,
             onnx.TensorProto.INT8: np.int8, onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32}


@dataclass
class EpochLog:
    epoch: int
    loss: float
    kd_loss: float
    feature_loss: float
    lr: float
    agreement: float | None
    seconds: float


@dataclass
class RecoveryReport:
    epochs_planned: int
    epochs_run: int
    steps: int
    best_epoch: int
    stopped: str                      # "epochs" | "time budget" | "early stop" | "diverged" (best state kept)
    agreement_before: float | None    # held-out top-1 agreement with the dense model
    agreement_after: float | None
    bn_reestimated: bool
    augment: str
    features: list[str]
    masked_tensors: int
    masked_zeros: int
    trained_tensors: int
    train_samples: int
    holdout_samples: int
    threads: int
    seed: int
    wall_s: float
    cpu_s: float
    settings: dict[str, Any]
    history: list[EpochLog] = field(default_factory=list)
    pruning_steps: list[dict] = field(default_factory=list)  # training-time pruning (workflows/iterative.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- helpers
@contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _input_dtypes(model: onnx.ModelProto) -> dict[str, Any]:
    inits = {t.name for t in model.graph.initializer}
    return {i.name: _NP_DTYPE.get(i.type.tensor_type.elem_type, np.float32) for i in model.graph.input
            if i.name not in inits}


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also outputs the float tensors `names` (for the teacher's feature targets)."""
    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    return m


class _Teacher:
    def __init__(self, model: onnx.ModelProto, threads: int, features: list[str]):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        # no spin-waiting: idle onnxruntime threads would steal the cores torch trains on (0.30 → 0.19 s a step)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        m = _with_outputs(model, features) if features else model
        self.sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.dtypes = _input_dtypes(model)
        self.output = model.graph.output[0].name
        self.features = list(features)

    def __call__(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feed = {k: np.ascontiguousarray(v, dtype=self.dtypes.get(k, v.dtype)) for k, v in feed.items()
                if k in self.dtypes}
        outs = self.sess.run([self.output] + self.features, feed)
        return outs[0], outs[1:]


def _arrays(data: Any, names: list[str]) -> dict[str, np.ndarray]:
    inputs = data.inputs
    if len(names) == 1 and names[0] not in inputs and len(inputs) == 1:
        return {names[0]: next(iter(inputs.values()))}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise OnnxPruneError(f"recovery data has no array for model input(s) {', '.join(missing)}")
    return {n: inputs[n] for n in names}


def _augment_plan(arrays: dict[str, np.ndarray], augment: bool | None) -> tuple[int, bool, str]:
    """(pad, flip, description) for the auto / forced augmentation policy (see the module docstring)."""
    if augment is False:
        return 0, False, "off"
    if len(arrays) != 1:
        if augment:
            raise OnnxPruneError("augmentation needs a single image input (N, C, H, W)")
        return 0, False, "off (several inputs)"
    x = next(iter(arrays.values()))
    if x.ndim != 4 or min(x.shape[2:]) < 16:
        if augment:
            raise OnnxPruneError(f"augmentation needs (N, C, H, W) images with H, W >= 16; input is {x.shape[1:]}")
        return 0, False, "off (not an image input)"
    if x.shape[1] == 3:
        pad = max(1, round(min(x.shape[2:]) / 8))
        return pad, True, f"random crop (pad {pad}) + horizontal flip"
    return 2, False, "random shift ±2 px (no flip: not a colour image)"


def _augment(x: np.ndarray, pad: int, flip: bool, rng: np.random.Generator) -> np.ndarray:
    if not pad and not flip:
        return x
    n, _, h, w = x.shape
    out = np.empty_like(x)
    if pad:
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        oy = rng.integers(0, 2 * pad + 1, n)
        ox = rng.integers(0, 2 * pad + 1, n)
        for i in range(n):
            out[i] = xp[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
    else:
        out[:] = x
    if flip:
        f = rng.random(n) < 0.5
        out[f] = out[f, :, :, ::-1]
    return out


def _mix(batch: dict[str, np.ndarray], how: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Mixup / CutMix of the batch with a shuffled copy; the teacher labels the mixed inputs (no label needed)."""
    perm = rng.permutation(len(next(iter(batch.values()))))
    lam = float(rng.beta(1.0, 1.0))
    out = {}
    for k, v in batch.items():
        x = v.astype(np.float32)
        if how == "mixup" or x.ndim != 4:
            out[k] = lam * x + (1 - lam) * x[perm]
            continue
        h, w = x.shape[2:]
        ch, cw = int(round(h * np.sqrt(1 - lam))), int(round(w * np.sqrt(1 - lam)))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1 = max(0, cy - ch // 2), min(h, cy + ch - ch // 2)
        x0, x1 = max(0, cx - cw // 2), min(w, cx + cw - cw // 2)
        x = x.copy()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        out[k] = x
    return out


class _Optimizer:
    """SGD (Nesterov momentum 0.9, coupled weight decay) or AdamW (decoupled), the torch.optim update rules.

    Own ~30 lines instead of torch.optim: constructing a torch.optim optimizer imports torch._dynamo on first use
    (3-15 s here, longer than a LeNet recovery)."""

    def __init__(self, groups: list[dict], kind: str, lr: float):
        self.param_groups = [dict(g, lr=lr) for g in groups]
        self.kind = kind
        self.state: dict[int, dict[str, Any]] = {}
        self.t = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for g in self.param_groups:
            lr, wd = g["lr"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state.setdefault(id(p), {})
                d = p.grad
                if self.kind == "sgd":
                    if wd:
                        d = d.add(p, alpha=wd)
                    buf = st.get("m")
                    if buf is None:
                        buf = st["m"] = d.clone()
                    else:
                        buf.mul_(0.9).add_(d)
                    p.add_(d.add(buf, alpha=0.9), alpha=-lr)
                else:
                    b1, b2, eps = 0.9, 0.999, 1e-8
                    if wd:
                        p.mul_(1 - lr * wd)
                    m = st.setdefault("m", torch.zeros_like(p))
                    v = st.setdefault("v", torch.zeros_like(p))
                    m.mul_(b1).add_(d, alpha=1 - b1)
                    v.mul_(b2).addcmul_(d, d, value=1 - b2)
                    denom = (v / (1 - b2 ** self.t)).sqrt_().add_(eps)
                    p.addcdiv_(m, denom, value=-lr / (1 - b1 ** self.t))


def _kd(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    student = student.float()  # bf16 logits under autocast: the softmax in float32
    return F.kl_div(F.log_softmax(student / T, dim=1), F.log_softmax(teacher / T, dim=1),
                    reduction="batchmean", log_target=True) * (T * T)


def match_features(student: TorchGraph, pruned: onnx.ModelProto, teacher: _Teacher | None, dense: onnx.ModelProto,
                   feed: dict[str, np.ndarray], threads: int, min_corr: float = 0.7,
                   names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Kept-channel indices {tensor: idx into the dense tensor's channel axis} for same-named feature tensors.

    Candidates: `names`, or the branch points of the pruned graph (tensors read by ≥ 2 nodes, not graph inputs /
    outputs). A candidate is kept when both graphs have it with equal rank and equal non-channel dims, and the
    Hungarian assignment of the pruned channels to dense channels by activation correlation (one batch) has a mean
    correlation ≥ `min_corr`.
    """
    from scipy.optimize import linear_sum_assignment

    if names is None:
        consumers: dict[str, int] = {}
        for n in pruned.graph.node:
            for i in set(n.input):
                consumers[i] = consumers.get(i, 0) + 1
        skip = {i.name for i in pruned.graph.input} | {o.name for o in pruned.graph.output} | \
            {t.name for t in pruned.graph.initializer}
        names = [t for t, c in consumers.items() if c >= 2 and t not in skip]
    dense_tensors = {o for n in dense.graph.node for o in n.output}
    names = [n for n in names if n in dense_tensors]
    if not names:
        return {}
    t_sess = _Teacher(dense, threads, names)
    _, t_feats = t_sess(feed)
    with torch.no_grad():
        was = student.training
        student.eval()
        s_feats = student.run(feed, fetch=names)
        student.train(was)
    out: dict[str, np.ndarray] = {}
    for name, tf in zip(names, t_feats):
        sf = s_feats[name].numpy()
        if sf.ndim < 2 or sf.ndim != tf.ndim or sf.shape[0] != tf.shape[0] or sf.shape[2:] != tf.shape[2:] \
                or sf.shape[1] > tf.shape[1]:
            continue
        a = np.moveaxis(sf, 1, -1).reshape(-1, sf.shape[1]).astype(np.float64)
        b = np.moveaxis(tf, 1, -1).reshape(-1, tf.shape[1]).astype(np.float64)
        a = (a - a.mean(0)) / (a.std(0) + 1e-8)
        b = (b - b.mean(0)) / (b.std(0) + 1e-8)
        corr = a.T @ b / len(a)                                           # (Cs, Ct)
        rows, cols = linear_sum_assignment(-corr)
        if corr[rows, cols].mean() >= min_corr:
            idx = np.empty(sf.shape[1], dtype=np.int64)
            idx[rows] = cols
            out[name] = idx
    return out


def _progress(enabled: bool, total: int):
    if not (enabled and sys.stderr.isatty()):
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("recover"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                 TextColumn("{task.description}"), TimeElapsedColumn(), console=Console(stderr=True),
                 transient=True)
    p.start()
    p.add_task("", total=total)
    return p


# ---------------------------------------------------------------------------------------------- main entry
def recover(pruned: onnx.ModelProto, dense: onnx.ModelProto, data: "Dataset | Any", *, epochs: int = 10,
            lr: float | None = None, batch_size: int = 64, temperature: float = 4.0, labels: bool = False,
            augment: bool | None = None, seed: int = 0, time_budget_s: float | None = None,
            holdout_fraction: float = 0.05, patience: int | None = None, optimizer: str = "sgd",
            weight_decay: float = 5e-4, warmup_fraction: float = 0.03, feature_weight: float = 0.0,
            features: list[str] | None = None, min_corr: float = 0.7, bn_reestimate: bool | None = None,
            bn_mode: str = "train", bn_align: bool = True, mix: str | None = None, keep_best: bool = True,
            threads: int | None = None, activation_l1: float = 0.0, precision: str = "auto",
            progress: Callable[[EpochLog], None] | bool = True) -> tuple[onnx.ModelProto, RecoveryReport]:
    """Train `pruned` to agree with `dense` on `data`; return (model with trained initializers, report).

    `data`: any object with `inputs` (dict of arrays keyed by input name, or one array), `labels` (array or None)
    and `__len__`. `epochs=0` returns the model with byte-identical initializers (nothing trained).

    Main knobs: `epochs`, `lr` (SGD default 0.03, AdamW 1e-3), `batch_size`, `temperature` (KD), `labels`
    (add CE on the data's labels), `augment` (None = auto policy, see the module docstring), `seed`, `threads`
    (torch and onnxruntime threads for the call; default 1), `time_budget_s` (wall clock; the cosine schedule is
    re-planned after epoch 1 to end inside it), `holdout_fraction` (seeded held-out split for agreement with the
    dense model: progress, best-epoch selection with `keep_best`, early stop with `patience` epochs),
    `feature_weight` / `features` / `min_corr` (feature targets), `bn_align`, `bn_reestimate`, `bn_mode`,
    `mix` ("mixup" / "cutmix" of the batch, teacher-labelled), `optimizer` ("sgd" | "adamw"), `weight_decay`.
    `activation_l1`: λ of paper 003's pruning-aware training, λ·mean|a| over the outputs of the prunable neurons /
    channels (`activation_tensors`) added to the loss (0 = off: training byte-identical to without it).
    `precision`: "auto" (bf16 autocast of the student's step for conv nets on AMX CPUs, see `use_bf16`), "fp32",
    "bf16"; the report's settings say what "auto" chose.
    `progress`: a callable getting each `EpochLog`, True for a rich bar on an interactive stderr, False for none.
    """
    if epochs < 0:
        raise OnnxPruneError("epochs must be >= 0")
    if optimizer not in ("sgd", "adamw"):
        raise OnnxPruneError(f"unknown optimizer '{optimizer}' (sgd, adamw)")
    if mix not in (None, "mixup", "cutmix"):
        raise OnnxPruneError(f"unknown mix '{mix}' (mixup, cutmix)")
    if bn_mode not in ("train", "frozen"):
        raise OnnxPruneError(f"unknown bn_mode '{bn_mode}' (train, frozen)")
    if not 0.0 <= holdout_fraction < 0.5:
        raise OnnxPruneError("holdout_fraction must be in [0, 0.5)")
    activation_l1 = check_activation_l1(activation_l1)
    precision = check_precision(precision)
    settings = dict(epochs=epochs, lr=lr, batch_size=batch_size, temperature=temperature, labels=labels,
                    augment=augment, time_budget_s=time_budget_s, holdout_fraction=holdout_fraction,
                    patience=patience, optimizer=optimizer, weight_decay=weight_decay,
                    warmup_fraction=warmup_fraction, feature_weight=feature_weight, min_corr=min_corr,
                    bn_reestimate=bn_reestimate, bn_mode=bn_mode, bn_align=bn_align, mix=mix, keep_best=keep_best,
                    threads=threads, activation_l1=activation_l1, precision=precision)
    threads = int(threads or 1)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    with _threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _recover(pruned, dense, data, epochs, lr, batch_size, temperature, labels, augment, seed,
                        time_budget_s, holdout_fraction, patience, optimizer, weight_decay, warmup_fraction,
                        feature_weight, features, min_corr, bn_reestimate, bn_mode, bn_align, mix, keep_best, threads, progress,
                        settings,
                        t_wall, t_cpu, activation_l1=activation_l1, precision=precision)


# ---------------------------------------------------------------------------------------------- the training step
def train_step(student: TorchGraph, opt: _Optimizer, masks: dict[str, torch.Tensor], feed: dict[str, torch.Tensor],
               teacher_logits: np.ndarray, *, temperature: float, lr: float, labels: np.ndarray | None = None,
               feature_targets: dict[str, torch.Tensor] | None = None, feature_weight: float = 0.0,
               fetch: Sequence[str] = (), activation_l1: float = 0.0, l1_tensors: Sequence[str] = ()
               ) -> tuple[tuple[float, float, float], dict[str, torch.Tensor]]:
    """One optimiser step: KL to the teacher's logits at `temperature` (+ feature targets, + CE on `labels`,
    + `activation_l1`·`l1_penalty` of the `l1_tensors`); gradients of masked tensors masked and the masks re-applied
    after the step, so zeros stay exactly zero.

    Returns (loss, distillation loss, feature loss) and the `fetch`ed student tensors of this training forward pass
    (detached): the activations that training-time pruning accumulates its statistics from, at no extra pass."""
    out_name = student.output_names[0]
    targets = feature_targets or {}
    l1_tensors = list(l1_tensors) if activation_l1 else []
    s_out = student.run(feed, fetch=list(dict.fromkeys([out_name, *targets, *fetch, *l1_tensors])))
    z = s_out[out_name]
    kd = _kd(z, torch.from_numpy(teacher_logits), temperature)
    loss = kd
    if l1_tensors:  # pruning-aware training (paper 003): small neuron outputs, fewer units that matter
        loss = loss + activation_l1 * l1_penalty([s_out[t] for t in l1_tensors])
    fl = torch.zeros(())
    for nm, tgt in targets.items():
        fl = fl + F.mse_loss(s_out[nm], tgt) / (tgt.var() + 1e-6)
    if targets:
        loss = loss + feature_weight * fl / len(targets)
    if labels is not None:
        loss = loss + F.cross_entropy(z, torch.from_numpy(labels).long())
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for nm, m in masks.items():
            g_ = student.tensor(nm).grad
            if g_ is not None:
                g_.mul_(m)
    opt.step()
    with torch.no_grad():
        for nm, m in masks.items():
            student.tensor(nm).mul_(m)
    return (float(loss.detach()), float(kd.detach()), float(fl.detach())), {k: s_out[k].detach() for k in fetch}


def l1_penalty(activations: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean |a| over every element of the given activations pooled (batch, units, positions): 003's L1 norm of
    the neuron outputs, divided by their count so that λ does not depend on the batch size or the network's width;
    every unit gets the same pressure, as in an unnormalised Σ‖a‖₁."""
    total = sum(a.abs().sum() for a in activations)
    return total / max(1, sum(a.numel() for a in activations))


def activation_tensors(model: onnx.ModelProto) -> list[str]:
    """The neuron outputs the activation L1 penalty acts on: the tensors the consumers of every prunable channel
    group read (after BN and activation; `units.groups.ChannelGroup.activations`, the same tensors structured
    F-screen taps) — the outputs of the units pruning removes, hidden neurons of an MLP, channel maps of a CNN."""
    from ..io.graph import copy_model, name_nodes
    from ..units.groups import analyse

    if any(not n.name for n in model.graph.node):  # models not loaded through io.model: name a copy's nodes
        model = name_nodes(copy_model(model))
    return sorted({t for g in analyse(model) if g.prunable for t in g.activations})


def check_activation_l1(value: float) -> float:
    """λ of the activation L1 penalty: a finite number ≥ 0 (0 = off, training unchanged)."""
    v = float(value)
    if not (np.isfinite(v) and v >= 0.0):
        raise OnnxPruneError(f"--activation-l1 {value}: must be a finite number >= 0")
    return v


def zero_masks(student: TorchGraph) -> dict[str, torch.Tensor]:
    """A keep-mask for every ≥ 2-D trainable tensor holding exact zeros (unstructured pruning's zeros)."""
    masks = {}
    for nm in student.trainable_names():
        p = student.tensor(nm)
        if p.dim() >= 2 and bool((p == 0).any()):
            masks[nm] = (p != 0).to(p.dtype)
    return masks


PRECISION = "auto"  # of the student's training step; see `use_bf16`


def check_precision(value: str) -> str:
    if value not in ("auto", "fp32", "bf16"):
        raise OnnxPruneError(f"unknown precision '{value}' (auto, fp32, bf16)")
    return value


def use_bf16(precision: str, channels_last: bool) -> bool:
    """Whether the student's forward + backward run under bfloat16 autocast (weights, optimiser, BN statistics,
    teacher and loss stay float32). "auto": only for channels-last convolution nets on CPUs with AMX bf16 tiles,
    where oneDNN's bf16 convolutions make a ResNet-20's forward + backward 1.45x cheaper (docs/BENCHMARKS.md,
    Recovery I b); without AMX bf16 is emulated (slower), and small Gemm nets (LeNet) gain nothing. "bf16" forces
    it."""
    if precision == "bf16":
        return True
    if precision == "fp32" or not channels_last:
        return False
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch without the probe
        return False


class Cosine:
    """Linear warm-up then cosine to zero over `total` steps (`total` may be re-planned while training)."""

    def __init__(self, base_lr: float, total: int, warmup_fraction: float):
        self.base, self.total = base_lr, max(1, total)
        self.warm = int(round(warmup_fraction * self.total))

    def __call__(self, step: int) -> float:
        if self.warm and step < self.warm:
            return self.base * (step + 1) / self.warm
        frac = (step - self.warm) / max(1, self.total - self.warm)
        return self.base * 0.5 * (1 + np.cos(np.pi * min(1.0, frac)))


def channels_last_safe(model: onnx.ModelProto) -> bool:
    """Whether torch may train this graph on channels-last images: every 2-D Conv's output and per-group input
    channel counts are multiples of 8. With counts such as 7 or 9 (`--round-to 1`, other tools' pruning), torch's
    CPU convolution backward on channels-last inputs corrupts the heap and aborts the process (torch 2.13 and 2.14;
    `tests/recover/test_distill.py`), so such graphs train in the default layout."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        dims = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if dims is not None and len(dims) == 4 and (dims[0] % 8 or (dims[1] % 8 and dims[1] > 4)):
            return False
    return True


class Distiller:
    """One distillation run: what stays fixed — the seeded train / held-out split, augmentation, the teacher (the
    dense model in onnxruntime) and its held-out predictions — and the student (graph, masks, optimiser), which
    `set_student` may replace between epochs: training-time pruning (`workflows/iterative.py`) swaps in a narrower
    graph or new masks and keeps training with the same data order, teacher and step count."""

    def __init__(self, student: onnx.ModelProto, dense: onnx.ModelProto, data: Any, *, batch_size: int = 64,
                 temperature: float = 4.0, labels: bool = False, augment: bool | None = None, seed: int = 0,
                 holdout_fraction: float = 0.05, threads: int = 1, optimizer: str = "sgd", lr: float | None = None,
                 weight_decay: float = 5e-4, feature_weight: float = 0.0, features: list[str] | None = None,
                 min_corr: float = 0.7, mix: str | None = None, activation_l1: float = 0.0,
                 precision: str = PRECISION):
        self.activation_l1 = check_activation_l1(activation_l1)
        self.precision = check_precision(precision)
        graph = TorchGraph(student)  # raises on unsupported ops before anything is trained
        in_names = graph.input_names
        d_inputs = _input_dtypes(dense)
        if set(d_inputs) != set(in_names):
            raise OnnxPruneError(f"pruned and reference models have different inputs ({sorted(in_names)} vs "
                                 f"{sorted(d_inputs)})")
        arrays = _arrays(data, in_names)
        n = len(next(iter(arrays.values())))
        y_all = getattr(data, "labels", None)
        if labels and y_all is None:
            raise OnnxPruneError("labels=True but the recovery data has no labels ('y')")
        self.rng = rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        n_hold = int(round(n * holdout_fraction)) if holdout_fraction > 0 else 0
        self.n_hold = n_hold = min(n_hold, n - 1)
        hold_idx, self.train_idx = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
        self.train = {k: v[self.train_idx] for k, v in arrays.items()}
        self.hold = {k: v[hold_idx] for k, v in arrays.items()}
        self.train_labels = None if y_all is None else np.asarray(y_all)[self.train_idx]
        self.y_train = self.train_labels if labels else None  # cross-entropy targets
        self.pad, self.flip, self.augment_desc = _augment_plan(arrays, augment)
        self.s_dtypes = {k: graph.input_dtypes.get(k, torch.float32) for k in in_names}
        self.batch_size, self.temperature, self.mix, self.seed = batch_size, temperature, mix, seed
        self.threads, self.optimizer, self.weight_decay = threads, optimizer, weight_decay
        self.base_lr = (0.03 if optimizer == "sgd" else 1e-3) if lr is None else lr
        self.feature_weight = feature_weight
        probe = {k: v[:min(256, len(v))] for k, v in self.train.items()}
        self.feat_idx = match_features(graph, student, None, dense, probe, threads, min_corr, features) \
            if feature_weight > 0 else {}
        self.teacher = _Teacher(dense, threads, list(self.feat_idx))
        self.hold_teacher = np.concatenate([self.teacher({k: v[i:i + 256] for k, v in self.hold.items()})[0].argmax(1)
                                            for i in range(0, n_hold, 256)]) if n_hold else np.zeros(0, np.int64)
        self.step = 0
        self.parallel = data_parallel()  # one rank of a data-parallel run (recover/parallel.py), or None
        self.set_student(student, graph)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.train_idx) // self.batch_size))

    def set_student(self, model: onnx.ModelProto, graph: TorchGraph | None = None) -> None:
        """Train `model` from now on: its own graph, masks from its exact zeros, a fresh optimiser state."""
        self.model = model
        self.graph = graph if graph is not None else TorchGraph(model)
        names = self.graph.trainable_names()
        self.trained_tensors = len(names)
        params = [self.graph.tensor(nm) for nm in names]
        self.masks = zero_masks(self.graph)
        self.masked_zeros = int(sum(int((m == 0).sum()) for m in self.masks.values()))
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": self.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        self.opt = _Optimizer(groups, self.optimizer, self.base_lr)
        self.memory_format = torch.channels_last if channels_last_safe(model) else torch.contiguous_format
        self.bf16 = use_bf16(self.precision, self.memory_format == torch.channels_last
                             and any(n.op_type == "Conv" for n in model.graph.node))
        self.l1_tensors = activation_tensors(model) if self.activation_l1 else []
        if self.activation_l1 and not self.l1_tensors:
            raise OnnxPruneError("--activation-l1: the model has no prunable neurons or channels whose outputs "
                                 "could be penalised")

    def feed_of(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in batch.items():
            t = torch.from_numpy(np.ascontiguousarray(v)).to(self.s_dtypes[k])
            # channels-last images: torch's CPU convolutions run ~1.7x faster (forward + backward, ResNet-20)
            out[k] = t.contiguous(memory_format=self.memory_format) if t.dim() == 4 else t
        return out

    def agreement(self) -> float | None:
        """Top-1 agreement of the student (inference mode) with the dense model on the held-out split."""
        if not self.n_hold:
            return None
        student, out_name = self.graph, self.graph.output_names[0]
        student.eval()
        hits = 0
        with torch.no_grad():
            for i in range(0, self.n_hold, 256):
                b = {k: v[i:i + 256] for k, v in self.hold.items()}
                hits += int((student.run(self.feed_of(b))[out_name].argmax(1).numpy()
                             == self.hold_teacher[i:i + 256]).sum())
        student.train()
        return hits / self.n_hold

    def epoch(self, lr_at: Callable[[int], float], fetch: Sequence[str] = (),
              on_batch: Callable[[dict[str, torch.Tensor], np.ndarray, np.ndarray], None] | None = None
              ) -> np.ndarray:
        """One pass over the shuffled training split (augmented, teacher-labelled), one `train_step` a batch;
        `on_batch(fetched, teacher_logits, train_rows)` sees every step's fetched activations. Returns the mean
        (loss, distillation loss, feature loss)."""
        order = self.rng.permutation(len(self.train_idx))
        sums = np.zeros(3)
        for b0 in range(0, len(order), self.batch_size):
            idx = np.sort(order[b0:b0 + self.batch_size])
            if len(idx) < 2:
                continue
            batch = {k: v[idx] for k, v in self.train.items()}
            if self.pad or self.flip:
                batch = {k: _augment(v, self.pad, self.flip, self.rng) for k, v in batch.items()}
            if self.mix:
                batch = _mix(batch, self.mix, self.rng)
            if self.parallel is not None:  # this rank's rows of the global batch
                batch, idx = self.parallel.shard(batch, idx)
            t_logits, t_feats = self.teacher(batch)
            targets = {nm: torch.from_numpy(tf).index_select(1, torch.from_numpy(self.feat_idx[nm]))
                       for nm, tf in zip(self.feat_idx, t_feats)}
            dp_student = self.graph if self.parallel is None else self.parallel.student(self.graph)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                losses, got = train_step(dp_student, self.opt, self.masks, self.feed_of(batch), t_logits,
                                         temperature=self.temperature, lr=lr_at(self.step),
                                         labels=None if self.y_train is None else self.y_train[idx],
                                         feature_targets=targets, feature_weight=self.feature_weight, fetch=fetch,
                                         activation_l1=self.activation_l1, l1_tensors=self.l1_tensors)
            if on_batch is not None:
                on_batch(got, t_logits, idx)
            self.step += 1
            sums += [losses[0] * len(idx), losses[1] * len(idx), losses[2] * len(idx)]
        return (sums if self.parallel is None else self.parallel.total(sums)) / max(1, len(order))

    def align_bn(self) -> None:
        """`_align_bn` on the training split (before training a freshly pruned or re-fitted student)."""
        if self.graph.bn_nodes():
            _align_bn(self.graph, self.train, self.feed_of, self.batch_size, self.pad, self.flip,
                      np.random.default_rng(self.seed + 2))

    def reestimate_bn(self) -> None:
        _reestimate_bn(self.graph, self.train, self.feed_of, self.batch_size, self.pad, self.flip,
                       np.random.default_rng(self.seed + 1))

    def bn_state(self) -> dict[str, torch.Tensor]:
        return {nm: self.graph.tensor(nm).detach().clone() for n_ in self.graph.bn_nodes() for nm in n_.input[3:5]}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in state.items():
                self.graph.tensor(k).copy_(v)

    def finish_bn(self, after: float | None, mode: bool | None) -> tuple[bool, float | None]:
        """Re-estimate BN statistics (`mode` True: keep them; None: keep them unless held-out agreement drops;
        False: keep the training EMA). Returns (re-estimated, agreement after)."""
        if mode is False or not self.graph.bn_nodes():
            return False, after
        saved = self.bn_state()
        self.reestimate_bn()
        new_agree = self.agreement()
        if mode is None and after is not None and new_agree is not None and new_agree < after:
            self.load(saved)
            return False, after
        return True, new_agree

    def written(self) -> onnx.ModelProto:
        """The student's model with the trained values written into its initializers (masks re-applied)."""
        with torch.no_grad():
            for nm, m in self.masks.items():
                self.graph.tensor(nm).mul_(m)
        self.graph.eval()
        return self.graph.write_back(self.model)


def _recover(pruned, dense, data, epochs, lr, batch_size, T, use_labels, augment, seed, budget, holdout_fraction,
             patience, optimizer, weight_decay, warmup_fraction, feature_weight, features, min_corr, bn_reestimate,
             bn_mode, bn_align, mix, keep_best, threads, progress, settings, t_wall, t_cpu, activation_l1=0.0,
             precision=PRECISION):
    d = Distiller(pruned, dense, data, batch_size=batch_size, temperature=T, labels=use_labels, augment=augment,
                  seed=seed, holdout_fraction=holdout_fraction, threads=threads, optimizer=optimizer, lr=lr,
                  weight_decay=weight_decay, feature_weight=feature_weight, features=features, min_corr=min_corr,
                  mix=mix, activation_l1=activation_l1, precision=precision)
    settings["precision"] = "bf16" if d.bf16 else "fp32"  # what "auto" resolved to on this CPU
    student = d.graph
    steps_per_epoch = d.steps_per_epoch
    planned = epochs
    lr_at = Cosine(d.base_lr, planned * steps_per_epoch, warmup_fraction)

    before = d.agreement()
    if epochs and bn_align and bn_mode == "train":
        d.align_bn()
    # the start is a candidate too: training must not make it worse — unless the loss has the activation penalty:
    # then agreement alone is not the objective, and the untrained input would always win against its own teacher
    best_agree, best_epoch, best_state = (None if activation_l1 else before), 0, None
    if keep_best and epochs and before is not None and not activation_l1:
        best_state = {k: v.detach().clone() for k, v in d.graph.named_initializers().items()}
    history: list[EpochLog] = []
    stopped = "epochs"
    bar = _progress(progress is True, planned) if planned else None
    if bn_mode == "frozen":
        student.eval()
    else:
        student.train()
    epoch = 0
    t_setup = time.perf_counter() - t_wall
    while epoch < planned:
        epoch += 1
        t0 = time.perf_counter()
        sums = d.epoch(lr_at)
        agree = d.agreement()
        if bn_mode == "frozen":
            student.eval()
        log = EpochLog(epoch, sums[0], sums[1], sums[2], float(d.opt.param_groups[0]["lr"]), agree,
                       time.perf_counter() - t0)
        history.append(log)
        if callable(progress):
            progress(log)
        if bar is not None:
            bar.update(bar.task_ids[0], advance=1, description=f"loss {log.loss:.4f}"
                       + (f"  held-out agreement {agree:.4f}" if agree is not None else ""))
        if not _finite(log.loss, student):  # diverged: a NaN student's argmax is class 0, which can tie a start at
            stopped = "diverged"            # chance on agreement; it must never become the best or be written
            break
        if agree is None or best_agree is None or agree >= best_agree:
            best_agree, best_epoch = agree, epoch
            best_state = {k: v.detach().clone() for k, v in student.named_initializers().items()}
        elif patience is not None and epoch - best_epoch >= patience:
            stopped = "early stop"
            break
        if budget is not None:
            elapsed = time.perf_counter() - t_wall
            per_epoch = (elapsed - t_setup) / epoch
            reserve = 0.5 * per_epoch  # BN re-estimation + write-back
            if epoch == 1 and planned > 1:
                fit = max(1, int((budget - t_setup - reserve) // per_epoch))
                if fit < planned:  # re-plan so the cosine schedule completes inside the budget
                    planned = fit
                    lr_at.total = max(d.step + 1, planned * steps_per_epoch)
                    if bar is not None:
                        bar.update(bar.task_ids[0], total=planned)
            if epoch < planned and elapsed + per_epoch + reserve > budget:
                stopped = "time budget"
                break
    if bar is not None:
        bar.stop()

    after = history[-1].agreement if history else before
    # go back to the best epoch only if it beats the last one by more than two standard errors of the held-out
    # agreement (250 images: ±2.7 points); otherwise held-out noise would pick a high-lr epoch over the annealed end
    if stopped == "diverged":
        if best_state is None:
            raise OnnxPruneError(f"recovery diverged at epoch {epoch} (non-finite loss or weights): lower the "
                                 "learning rate")
        d.load(best_state)
        after = best_agree
    elif keep_best and best_state is not None and best_epoch != epoch and after is not None and best_agree is not None:
        se = np.sqrt(max(best_agree * (1 - best_agree), 1e-4) / max(1, d.n_hold))
        if best_agree - after > 2 * se:
            d.load(best_state)
            after = best_agree
        else:
            best_epoch = epoch
    reestimated = False
    if epoch:
        reestimated, after = d.finish_bn(after, bn_reestimate)
    out = d.written()
    report = RecoveryReport(
        epochs_planned=planned, epochs_run=epoch, steps=d.step, best_epoch=best_epoch, stopped=stopped,
        agreement_before=before, agreement_after=after, bn_reestimated=reestimated, augment=d.augment_desc,
        features=list(d.feat_idx), masked_tensors=len(d.masks), masked_zeros=d.masked_zeros,
        trained_tensors=d.trained_tensors, train_samples=len(d.train_idx), holdout_samples=d.n_hold,
        threads=threads, seed=seed, wall_s=time.perf_counter() - t_wall, cpu_s=time.process_time() - t_cpu,
        settings=settings, history=history)
    return out, report


def _finite(loss: float, student: TorchGraph) -> bool:
    """Whether an epoch left a usable student: finite mean loss and finite weights."""
    return bool(np.isfinite(loss)) and all(bool(torch.isfinite(v).all())
                                           for v in student.named_initializers().values() if v.is_floating_point())


def _reestimate_bn(student: TorchGraph, train: dict[str, np.ndarray], feed_of, batch_size: int, pad: int = 0,
                   flip: bool = False, rng: np.random.Generator | None = None) -> None:
    """Running statistics = cumulative (sample-weighted) average of batch statistics over the training split,
    augmented as in training (one pass; see the module docstring for why not un-augmented)."""
    bns = student.bn_nodes()
    student.train()
    student._bn_collect = {}
    try:
        n = len(next(iter(train.values())))
        bs = max(batch_size, 64)
        with torch.no_grad():
            for i in range(0, n, bs):
                if n - i < 2:
                    break
                b = {k: v[i:i + bs] for k, v in train.items()}
                if (pad or flip) and rng is not None:
                    b = {k: _augment(v, pad, flip, rng) for k, v in b.items()}
                student.run(feed_of(b))
        acc = student._bn_collect
        with torch.no_grad():
            for node in bns:
                a = acc.get(node.input[3])
                if a is None or not a[2]:
                    continue
                student.tensor(node.input[3]).copy_(a[0] / a[2])
                student.tensor(node.input[4]).copy_(a[1] / a[2])
    finally:
        student._bn_collect = None
        student.eval()


def _align_bn(student: TorchGraph, train: dict[str, np.ndarray], feed_of, batch_size: int, pad: int, flip: bool,
              rng: np.random.Generator) -> None:
    """Make every BN's running statistics the true statistics of its input, without changing the function.

    A pruned (and least-squares re-fitted) model keeps the dense model's running statistics, which no longer
    describe its BN inputs; the re-fit even relies on them. Switching such a model to batch statistics changes
    the function (ResNet-20 at 50 %: 58.6 % → 50.9 % top-1 from re-estimation alone). Instead, with the true
    input statistics (μ', σ'²) measured in inference mode over the (augmented) training split, set
        γ' = γ·√(σ'²+ε)/√(σ²+ε),  β' = β + γ·(μ'−μ)/√(σ²+ε),  running (μ, σ²) := (μ', σ'²)
    — the inference function is unchanged, and train-mode batch statistics now start close to the running ones,
    so training starts from the pruned model instead of from a disrupted one.
    """
    bns = [n for n in student.bn_nodes() if all(student._index.get(i, ("", 0))[0] == "p" for i in n.input[1:3])]
    if not bns:
        return
    was = student.training
    student.eval()
    names = [n.input[0] for n in bns]
    sums: dict[str, list] = {}
    n = len(next(iter(train.values())))
    with torch.no_grad():
        for i in range(0, n, max(batch_size, 64)):
            b = {k: v[i:i + max(batch_size, 64)] for k, v in train.items()}
            if pad or flip:
                b = {k: _augment(v, pad, flip, rng) for k, v in b.items()}
            feats = student.run(feed_of(b), fetch=names)
            for nm in names:
                x = feats[nm].double()
                dims = [0] + list(range(2, x.dim()))
                cnt = x.numel() / x.shape[1]
                acc = sums.setdefault(nm, [0.0, 0.0, 0.0])
                acc[0] = acc[0] + x.sum(dims)
                acc[1] = acc[1] + (x * x).sum(dims)
                acc[2] += cnt
        for node in bns:
            s0, s1, cnt = sums[node.input[0]]
            if cnt < 2:
                continue
            mu_new = s0 / cnt
            var_new = (s1 / cnt - mu_new * mu_new).clamp_min(0) * cnt / (cnt - 1)
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            gamma, beta = student.tensor(node.input[1]), student.tensor(node.input[2])
            mu, var = student.tensor(node.input[3]), student.tensor(node.input[4])
            g64, b64, mu64, var64 = gamma.double(), beta.double(), mu.double(), var.double()
            inv_old = 1.0 / torch.sqrt(var64 + eps)
            gamma.copy_(g64 * torch.sqrt(var_new + eps) * inv_old)
            beta.copy_(b64 + g64 * (mu_new - mu64) * inv_old)
            mu.copy_(mu_new)
            var.copy_(var_new)
    student.train(was)
