"""`onnxprune recover`: train a pruned model against its dense original (distillation), same graph written back."""
from __future__ import annotations

import click

from ._common import activation_l1_option, emit_json, json_option


@click.command("recover")
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--reference", required=True, type=click.Path(dir_okay=False), help="The dense model (the teacher).")
@click.option("--data", required=True, type=click.Path(),
              help="Training data (.npz: x, optional y) — your training set, or the calibration data.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Recovered .onnx path.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(0),
              help="Passes over --data (0 writes the model back unchanged).")
@click.option("--time", "seconds", type=click.FloatRange(0, min_open=True),
              help="Wall-clock budget in seconds; the learning-rate schedule is fitted into it.")
@click.option("--labels", is_flag=True, help="Add cross-entropy on the data's labels to the distillation loss.")
@click.option("--augment/--no-augment", default=None,
              help="Data augmentation (default: random crop + flip for colour images, small shifts for grey ones).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1), help="Samples per training step.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed and thread count, same bytes.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Train data-parallel (PyTorch DDP) on N local processes, one thread each: the same training "
                   "as one process step for step, up to float rounding. Several machines: torchrun or Ray Train "
                   "(docs/ARCHITECTURE.md).")
@activation_l1_option
@json_option
def recover_cmd(pruned, reference, data, output, epochs, seconds, labels, augment, batch_size, seed, activation_l1,
                workers, as_json) -> None:
    """Recover the accuracy PRUNED lost: distillation from --reference on --data, in PyTorch, written back into
    the same ONNX initializers."""
    from .. import api

    r = api.recover(pruned, reference, data, output, epochs=epochs, seconds=seconds, labels=labels, augment=augment,
                    seed=seed, batch_size=batch_size, activation_l1=activation_l1, workers=workers)
    if as_json:
        emit_json(r.to_dict())
    else:
        click.echo(r.summary())
