"""Helpers shared by the CLI commands: JSON output and common options (table formatting lives in `report`)."""
from __future__ import annotations

import json
from typing import Any

import click


def emit_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable))


def _jsonable(o: Any) -> Any:
    import numpy as np
    from pathlib import Path

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


RECOVER_EPOCHS = 10  # --recover without --recover-epochs (docs/BENCHMARKS.md, recovery tables)
DEFAULT_GRID = "0:0.9:0.05"  # the ratios certification tests (compress and certify alike; api.GRID)
delta_option = click.option("--delta", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
                            show_default=True, help="δ: the certificate holds with probability ≥ 1 − δ.")
LOSSES = ("auto", "new_error", "disagreement", "positions", "cosine", "relative")  # certify.LOSSES, plus auto
loss_option = click.option(
    "--loss", type=click.Choice(LOSSES), default="auto", show_default=True,
    help="The per-sample loss whose mean is certified ≤ ε. auto: new_error (labels) / disagreement for (N, K) "
         "classifiers, positions for score maps (N, K, …), relative for other outputs. positions: fraction of a "
         "sample's positions whose class changes; cosine: 1{cos < 1 − τ} (embeddings); relative: min(1, ‖p − d‖ / "
         "(τ‖d‖)) (regression).")
loss_tau_option = click.option("--loss-tau", type=click.FloatRange(0, min_open=True),
                               help="τ of --loss cosine (default 0.01) or relative (default 0.1).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
batch_option = click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1),
                            help="Samples per onnxruntime call.")


activation_l1_option = click.option(
    "--activation-l1", "activation_l1", type=float, default=0.0, show_default=True, metavar="λ",
    help="Pruning-aware training (paper 003): add λ·mean|a| of the prunable neurons' / channels' outputs to the "
         "recovery loss, so that fewer units carry the function (0 = off; needs recovery training).")


CRITERIA = ("fscreen", "magnitude", "bn", "l1", "l2", "apoz", "ri", "wanda", "taylor")


def pruning_options(f):
    """The options every pruning command shares; the command receives them as one `settings` PruneSettings."""
    import functools

    opts = [
        click.option("--mode", type=click.Choice(["structured", "unstructured"]), default="structured",
                     show_default=True, help="Remove channels (smaller, faster) or zero weights (smaller file)."),
        click.option("--criterion", type=click.Choice(CRITERIA), default="fscreen", show_default=True,
                     help="fscreen = α·F-statistic + (1-α)·magnitude; bn/l1/l2/apoz/ri (structured; magnitude means "
                          "l1 there: a channel's magnitude is its filter's L1 norm), magnitude/wanda/ri/apoz "
                          "(unstructured); taylor (both: first-order |g·w| per weight, Σ|g·a| per channel, "
                          "gradients in PyTorch — needs the torch extra)."),
        click.option("--alpha", type=click.FloatRange(0, 1), default=0.2, show_default=True,
                     help="F-screen weight α in M = α·S + (1-α)·|w| (percentile ranks)."),
        click.option("--beta", type=float, default=1.0, show_default=True,
                     help="Relative importance: score = mean + β·std."),
        click.option("--allocation", type=click.Choice(["global", "uniform"]), default="global", show_default=True,
                     help="global: one score threshold over all layers (layers lose different fractions); uniform: "
                          "every layer / group loses the same fraction (Torch-Pruning's per-layer ratio)."),
        click.option("--protect", multiple=True, help="Layer (node or weight name, or first/last) to leave alone."),
        click.option("--min-keep", type=click.FloatRange(0, 1), default=0.02, show_default=True,
                     help="Minimum kept fraction per layer / group (unstructured: at most 2/3 of the kept "
                          "fraction 1 − ratio, so the floors never use up the budget)."),
        click.option("--min-channels", type=click.IntRange(1), default=1, show_default=True,
                     help="Structured: keep at least N channels per group (16 keeps onnxruntime's blocked conv "
                          "kernels near full speed; see docs/BENCHMARKS.md)."),
        click.option("--round-to", type=click.IntRange(1), default=8, show_default=True,
                     help="Structured: keep channel counts multiples of N (onnxruntime fast kernels)."),
        click.option("--reconstruct/--no-reconstruct", default=True, show_default=True,
                     help="Least-squares re-fit of the kept weights (and biases) from the calibration data, layer by "
                          "layer; skipped when no calibration data is given."),
        click.option("--recover", "recover_flag", is_flag=True,
                     help=f"Recover accuracy after pruning: train the pruned model against the dense one (label-free "
                          f"distillation in PyTorch, weights written back into the same ONNX graph); "
                          f"{RECOVER_EPOCHS} epochs unless --recover-epochs says otherwise. Needs the torch extra."),
        click.option("--recover-epochs", type=click.IntRange(0), default=None,
                     help="Epochs of recovery training (implies --recover; 0 = off)."),
        click.option("--recover-time", type=click.FloatRange(0, min_open=True), default=None,
                     help="Wall-clock budget of the recovery training, in seconds (the schedule is fitted into it)."),
        click.option("--recover-labels", is_flag=True,
                     help="Add cross-entropy on the data's labels to the distillation loss."),
        click.option("--schedule", type=click.Choice(["oneshot", "iterative"]), default="oneshot", show_default=True,
                     help="oneshot: prune, re-fit, then recover. iterative: prune in --prune-steps steps whose ratio "
                          "follows paper 001's logistic annealing, distilling from the dense model between steps "
                          "(scores from statistics gathered during training; implies --recover)."),
        click.option("--prune-steps", type=click.IntRange(1), default=5, show_default=True,
                     help="Pruning steps of --schedule iterative."),
        activation_l1_option,
        click.option("--augment/--no-augment", default=None,
                     help="Recovery's data augmentation (default: random crop + flip for colour images, small "
                          "shifts for grey ones, none otherwise)."),
        click.option("--labels", type=click.Choice(["auto", "true", "predicted"]), default="auto", show_default=True,
                     help="Class labels for statistics: y from the data, or the dense model's predictions."),
        click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1),
                     help="Samples per onnxruntime call (a model with a fixed batch size uses its own)."),
        click.option("--seed", default=0, show_default=True, type=int,
                     help="Seed of every random choice (splits, sampled positions): same inputs + seed, same bytes."),
    ]

    @functools.wraps(f)
    def wrapper(*args, mode, criterion, alpha, beta, allocation, protect, min_keep, min_channels, round_to,
                reconstruct, recover_flag, recover_epochs, recover_time, recover_labels, schedule, prune_steps,
                activation_l1, augment,
                labels, batch_size, seed, ratio=0.5, **kwargs):
        from ..select.plan import PruneSettings

        if mode == "structured" and criterion == "magnitude":
            criterion = "l1"  # a channel's magnitude is its filter's L1 norm
        settings = PruneSettings(ratio=ratio if ratio is not None else 0.5, mode=mode, criterion=criterion,
                                 alpha=alpha, beta=beta, allocation=allocation, protect=tuple(protect),
                                 min_keep=min_keep, min_channels=min_channels, round_to=round_to,
                                 reconstruct=reconstruct, labels=labels, batch_size=batch_size, seed=seed,
                                 recover_epochs=recover_epochs if recover_epochs is not None else
                                 (RECOVER_EPOCHS if recover_flag or recover_time or schedule == "iterative" else 0),
                                 recover_seconds=recover_time, recover_labels=recover_labels, augment=augment,
                                 schedule=schedule, prune_steps=prune_steps, activation_l1=activation_l1)
        return f(*args, settings=settings, ratio=ratio, **kwargs)

    for o in reversed(opts):
        wrapper = o(wrapper)
    return wrapper
