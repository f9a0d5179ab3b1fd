"""Training-time pruning (`--schedule iterative`; paper 001, Algorithms 1–2): prune in K steps whose cumulative
ratio follows the logistic annealing schedule (`recover/schedule.py`), distilling from the dense model between
steps (`recover/distill.py: Distiller`), each step scored by the criterion — for F-screen, α·S + (1−α)·|w| or
α·S(C) + (1−α)·|γ_C| — on the *current* trained weights.

Statistics: with F-screen on channel maps or features (CNNs, MLPs), the F-statistic's sufficient statistics are
accumulated online from the training forward passes of the epochs before each step (001 §3.2: no extra pass; the
activations of augmented images in train-mode BatchNorm, classes from the data's labels — or the dense model's
predictions without labels or with `--labels predicted`). The first step uses the one-shot statistics pass on the
dense model (there is no training before it: distilling the dense model into itself teaches nothing). Criteria
needing other statistics (APoZ, relative importance, Wanda) and transformer token views re-run the onnxruntime
statistics pass on the current weights before each step (Taylor its gradient pass); magnitude criteria need none.

Mechanism, and why:
* Structured — each step is the one-shot machinery applied to the current trained model (`materialise`: the
  checked channel rewrite, then the least-squares re-fit against the current model on the calibration data), so
  the graph gets narrower step by step. Training the full-width graph with masked consumers instead would cost
  2.8× a step of the 50 % model on ResNet-20 (0.33 vs 0.12 CPU-s for 64 images, one thread) — a third of the
  epochs at equal CPU time. Removed channels no longer exist, so pruned stays pruned (001 Alg. 2); the written
  plan maps every step's kept indices back to the dense model's channels.
* Unstructured — shapes stay until the end: each step zeros the newly pruned weights (currently-zero weights are
  scored −∞: pruned stays pruned, 001 Alg. 1) and training keeps them exactly zero (`zero_masks`); the written
  model is `mode.apply` of the last plan to the trained model — the checked rewrite (dead neurons removed) of a
  model whose pruned weights are already exactly zero, so it equals the trained model.
The steps fall at the start of epochs 0, s, 2s, … (s = `span`·epochs / K); after the last, training continues at
the final width to the end of the one cosine learning-rate schedule of the whole run.
With `--activation-l1 λ` (paper 003's pruning-aware training) the epochs before the last step add λ·mean|a| of the
prunable units' outputs to the loss, so the later steps' scores see units the penalty has silenced; after the last
step there is nothing left to choose and the penalty only fights the distillation, so it is dropped (003: train
with the penalty, prune, fine-tune). Measured on LeNet-300-100: docs/BENCHMARKS.md "Recovery III".

Measured (ResNet-20, 5k calibration images, docs/BENCHMARKS.md "Recovery III"): at 50 % of channels, iterative
(K = 5, 20 epochs) 79.12 % vs one-shot (22 epochs) 78.64 % at 1.24× the CPU time — within noise, so `oneshot`
stays the default. One epoch at the peak learning rate moves the barely pruned model away from the teacher
(held-out agreement 0.97 → 0.82) before the second step: a lower rate while pruning is the next thing to try.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..io.data import Dataset
from ..io.model import model_hash, validate
from ..progress import say
from ..select.plan import Plan
if TYPE_CHECKING:  # annotations only (torch is imported when the schedule runs)
    from ..recover.distill import RecoveryReport

# `prepared` below is a `workflows.prune.Prepared`: prune.py calls this module, and this module reaches the one-shot
# machinery (re-scoring, the checked rewrite) only through that object's methods, so the two do not import each other
Prepared = Any

PRUNE_SPAN = 0.3  # the K steps are spread over this fraction of the epochs (one epoch apart at K = 5, 20 epochs)


def prune_while_training(prepared: Prepared, ratio: float, data: Dataset | None, train: Dataset,
                         span: float = PRUNE_SPAN) -> tuple[onnx.ModelProto, Plan, RecoveryReport]:
    """The candidate at `ratio`, pruned in `settings.prune_steps` annealed steps while distilling from the dense
    model on `train` for `settings.recover_epochs` epochs; `data` is the re-fit / rewrite-check data (as in
    `Prepared.build`)."""
    import torch

    from ..recover.distill import Cosine, Distiller, RecoveryReport, _threads
    from ..recover.schedule import OnlineScreen, annealed_ratios, online_supported

    s = prepared.settings
    if s.recover_seconds is not None:
        raise OnnxPruneError("--recover-time is not supported with --schedule iterative: give --recover-epochs")
    dense, mode = prepared.model, prepared.mode
    structured = s.mode == "structured"
    epochs = s.recover_epochs
    k_steps = max(1, min(s.prune_steps, epochs))
    ratios = annealed_ratios(ratio, k_steps)
    gap = max(1, int(round(span * epochs / k_steps)))
    at = {k * gap: k for k in range(k_steps)}  # epoch → step pruning before it
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    log: list[dict] = []

    # step 0: the one-shot scores of the dense model
    plan = mode.select(dense, prepared.scores, ratios[0], s)
    total0 = _channels(prepared.scores) if structured else None
    alive = {g.id: np.arange(g.size) for g in prepared.scores.groups} if structured else None
    current = _step_model(prepared, dense, plan, data, structured)
    if structured:
        alive = _compose(alive, plan)
    with _threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        d = Distiller(current, dense, train, augment=s.augment, seed=s.seed, labels=s.recover_labels,
                      batch_size=_batch(), activation_l1=s.activation_l1)
        before = d.agreement()
        lr_at = Cosine(d.base_lr, epochs * d.steps_per_epoch, 0.03)
        d.align_bn()
        d.graph.train()
        log.append(_logged(0, 0, ratios[0], plan, alive, d, "one-shot statistics of the dense model"))
        online = s.criterion == "fscreen" and online_supported(mode.requests(dense, s))
        if online and s.labels == "true" and d.train_labels is None:
            raise OnnxPruneError("--labels true: the recovery data has no labels ('y')")
        screen = None
        for epoch in range(epochs):
            k = at.get(epoch, 0)
            if k:  # prune step k on the current trained weights
                trained_agree = d.agreement()
                current = d.written()
                scores, how = _scores(prepared, current, screen, data)
                screen = None
                if structured:
                    rel = max(0.0, 1.0 - (1.0 - ratios[k]) * total0 / _channels(scores))
                    plan = mode.select(current, scores, rel, s)
                    alive = _compose(alive, plan)
                else:
                    plan = mode.select(current, _pruned_stay_pruned(scores, current), ratios[k], s)
                current = _step_model(prepared, current, plan, data, structured)
                d.set_student(current)
                d.align_bn()
                d.graph.train()
                log.append(_logged(k, epoch, ratios[k], plan, alive, d, how, trained_agree))
            if d.activation_l1 and epoch >= max(at):  # 003: train with the penalty, prune, fine-tune without it
                d.activation_l1, d.l1_tensors = 0.0, []
            pending = any(e > epoch for e in at)
            if online and pending and screen is None:  # statistics for the next step, from this epoch on
                screen = OnlineScreen(mode.requests(current, s))
            if screen is None:
                d.epoch(lr_at)
            else:
                d.epoch(lr_at, screen.tensors,
                        lambda got, t_logits, rows, sc=screen: sc.update(got, _labels(s, d, t_logits, rows)))
        after = d.agreement()
        reestimated, after = d.finish_bn(after, None)
        trained = d.written()
    if structured:
        model = validate(trained)
        final = Plan("structured", model_hash(dense), {**s.to_dict(), "ratio": float(ratio)},
                     channels={g: [int(i) for i in a] for g, a in alive.items()
                               if len(a) < _size(prepared.scores, g)})
    else:
        last_plan = replace(plan, model_hash=model_hash(trained))
        model = mode.apply(trained, last_plan, probe=data)
        final = replace(plan, model_hash=model_hash(dense), settings={**s.to_dict(), "ratio": float(ratio)})
    report = RecoveryReport(
        epochs_planned=epochs, epochs_run=epochs, steps=d.step, best_epoch=epochs, stopped="epochs",
        agreement_before=before, agreement_after=after, bn_reestimated=reestimated, augment=d.augment_desc,
        features=[], masked_tensors=len(d.masks), masked_zeros=d.masked_zeros, trained_tensors=d.trained_tensors,
        train_samples=len(d.train_idx), holdout_samples=d.n_hold, threads=1, seed=s.seed,
        wall_s=time.perf_counter() - t_wall, cpu_s=time.process_time() - t_cpu,
        settings={"schedule": "iterative", "prune_steps": k_steps, "span": span, "epochs": epochs,
                  "precision": "bf16" if d.bf16 else "fp32",
                  **({"activation_l1": s.activation_l1} if s.activation_l1 else {})},
        pruning_steps=log)
    return model, final, report


def _batch() -> int:
    from .recover import RECOVER_BATCH

    return RECOVER_BATCH


def _channels(scores) -> int:
    """Prunable channels of the groups scored (a unit tied across conv groups counts its channels)."""
    return int(sum(g.channels for g in scores.groups))


def _size(scores, gid: str) -> int:
    return next(g.size for g in scores.groups if g.id == gid)


def _compose(alive: dict[str, np.ndarray], plan: Plan) -> dict[str, np.ndarray]:
    """The dense model's channel indices still alive after `plan` (indices into the current model's groups)."""
    return {g: (a[np.asarray(plan.channels[g], dtype=np.int64)] if g in plan.channels else a) for g, a in alive.items()}


def _step_model(prepared: Prepared, model: onnx.ModelProto, plan: Plan, data: Dataset | None, structured: bool
                ) -> onnx.ModelProto:
    """Structured: the checked channel rewrite of the current model, re-fitted against it. Unstructured: the
    current model with the plan's weights zeroed — shapes kept, so no re-fit (the weight re-fit works on the model
    with dead neurons removed) and dead neurons go at the end."""
    if structured:
        return prepared.materialise(model, plan, data, prepared.settings.reconstruct and data is not None)
    from ..rewrite.masks import masked

    return masked(model, plan)


def _scores(prepared: Prepared, current: onnx.ModelProto, screen, data: Dataset | None):
    """The criterion's scores of the current weights, and how their statistics were obtained."""
    mode, settings = prepared.mode, prepared.settings
    if screen is not None and screen.n:
        return (mode.score(current, screen.stats(model_hash(current), "online"), settings),
                f"online F over {screen.n} training samples")
    how = ("statistics of the current weights" if mode.requests(current, settings) or settings.criterion == "taylor"
           else "magnitudes of the current weights")
    return prepared.rescored(current, data), how  # whatever the criterion needs: a pass, gradients, or none


def _pruned_stay_pruned(scores, current: onnx.ModelProto):
    """Unstructured scores with the current model's zeros scored −∞ (001 Alg. 1 prunes among what is left)."""
    from ..io.graph import initializer_map

    w = initializer_map(current)
    return replace(scores, values={n: np.where(w[n] == 0, -np.inf, v) for n, v in scores.values.items()})


def _labels(settings, d, teacher_logits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Classes of a training batch for the online F: the data's labels (auto / true), else the dense model's
    predictions on the (augmented) batch."""
    if settings.labels == "predicted" or d.train_labels is None:
        return teacher_logits.argmax(1)
    return np.asarray(d.train_labels[rows], dtype=np.int64)


def _logged(k: int, epoch: int, ratio: float, plan: Plan, alive, d, how: str, trained: float | None = None
            ) -> dict:
    """One pruning step for the report (and one progress line): held-out agreement of the trained model before
    the step (`trained`) and of the pruned (re-fitted) one after it."""
    agree = d.agreement()
    kept = (int(sum(len(a) for a in alive.values())) if alive is not None
            else int(sum(int(m.sum()) for m in plan.masks.values())))
    unit = "channels" if alive is not None else "weights"
    line = f"prune step {k + 1}: before epoch {epoch + 1}, ratio {ratio:.3f}, {kept} {unit} kept ({how})"
    if agree is not None:
        line += "; held-out agreement with the dense model " + \
            (f"{trained:.3f} → {agree:.3f}" if trained is not None else f"{agree:.3f}")
    say(line)
    return {"step": k + 1, "epoch": epoch, "ratio": ratio, "kept": kept, "scores": how, "agreement_before": trained,
            "agreement": agree}
