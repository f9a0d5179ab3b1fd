"""Train a bundled model on the real data and save its weights (resumable, seeded).

    python models/train.py resnet20 --data ../shared/data --epochs 30

Recipe (all models): SGD, Nesterov momentum 0.9, one-cycle learning rate, weight decay 5e-4 (1e-4 for the FC
net), batch 128; CIFAR uses random crop (pad 4) and horizontal flip; MNIST uses random +-2 px shifts. A
checkpoint is written after every epoch and picked up on restart, so a run can span several sittings. The final
weights go to models/weights/NAME.pt and the test accuracy to models/weights/NAME.json; export to ONNX with
`onnxprune export models/archs.py:NAME --weights models/weights/NAME.pt ...` (see models/README.md).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import archs  # noqa: E402
import datasets  # noqa: E402

HERE = Path(__file__).parent
RECIPES = {  # name: (dataset, epochs, peak lr, weight decay)
    "lenet300": ("mnist", 30, 0.05, 1e-4),
    "lenet5bn": ("mnist", 8, 0.05, 5e-4),
    "resnet20": ("cifar10", 18, 0.2, 5e-4),
    "densenet": ("cifar10", 4, 0.2, 5e-4),
    "mobilenetv2": ("cifar10", 5, 0.2, 4e-5),
    "vit_cifar": ("cifar10", 10, 1e-3, 0.05),
    "vit4_cifar": ("cifar10", 20, 1e-3, 0.05),
    "rowformer_mnist": ("mnist", 8, 1e-3, 0.05),
}
# transformers: AdamW (betas 0.9, 0.999) instead of SGD, same one-cycle LR
ADAMW = {"vit_cifar", "vit4_cifar", "rowformer_mnist"}


def augment(x: torch.Tensor, gen: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Random translation by up to `pad` pixels (zero fill) and optional horizontal flip, per sample."""
    n, _, h, w = x.shape
    xp = nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.stack([xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if flip:
        m = torch.rand(n, generator=gen) < 0.5
        out[m] = out[m].flip(3)
    return out


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i:i + batch]).float().contiguous(memory_format=torch.channels_last)
        correct += (model(xb).argmax(1).numpy() == y[i:i + batch]).sum()
    return float(correct) / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(RECIPES))
    ap.add_argument("--data", required=True, help="folder with mnist.npz / cifar10-jpg.tar.gz")
    ap.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt-dir", default=str(datasets.cache_dir() / "train"))
    ap.add_argument("--init", help="start from these weights (a second, short cycle: fine-tuning)")
    ap.add_argument("--lr", type=float, help="override the recipe's peak learning rate")
    ap.add_argument("--bf16", action="store_true",
                    help="training forward under CPU autocast bfloat16 (weights, optimizer, evaluation stay float32)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    dataset, epochs, lr, wd = RECIPES[args.name]
    epochs = args.epochs or epochs
    lr = args.lr or lr
    d = datasets.load_mnist(args.data) if dataset == "mnist" else datasets.load_cifar10(args.data)
    x_tr, y_tr = torch.from_numpy(d["x_train"]).float(), torch.from_numpy(d["y_train"])
    model = archs.FACTORIES[args.name]()
    if args.init:
        model.load_state_dict(torch.load(args.init, weights_only=True))
    model = model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0}]
    if args.name in ADAMW:
        opt = torch.optim.AdamW(groups, lr=lr)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    steps = (len(x_tr) // args.batch) * epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    gen = torch.Generator().manual_seed(args.seed)
    ckpt = Path(args.ckpt_dir) / (f"{args.name}_s{args.seed}_e{epochs}{'_ft' if args.init else ''}"
                                  f"{'_bf16' if args.bf16 else ''}.pt")
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    start = 0
    if ckpt.exists():
        s = torch.load(ckpt, weights_only=False)
        model.load_state_dict(s["model"]), opt.load_state_dict(s["opt"]), sched.load_state_dict(s["sched"])
        gen.set_state(s["gen"]), torch.set_rng_state(s["torch_rng"])
        start = s["epoch"]
        print(f"resumed {ckpt} at epoch {start}", flush=True)

    loss_fn = nn.CrossEntropyLoss()
    pad, flip = (4, True) if dataset == "cifar10" else (2, False)
    for epoch in range(start, epochs):
        model.train()
        t0, tot = time.time(), 0.0
        perm = torch.randperm(len(x_tr), generator=gen)
        for i in range(len(x_tr) // args.batch):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            xb = augment(x_tr[idx], gen, pad, flip).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext():
                loss = loss_fn(model(xb), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item()
        held = "x_val" if dataset == "mnist" else "x_calib"
        acc = accuracy(model, d[held], d[held.replace("x_", "y_")])
        print(f"{args.name} epoch {epoch + 1}/{epochs} loss {tot / (i + 1):.4f} held-out acc {acc:.4f} "
              f"({time.time() - t0:.0f}s)", flush=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "gen": gen.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch + 1}, ckpt)

    test_acc = accuracy(model, d["x_test"], d["y_test"])
    out = HERE / "weights"
    out.mkdir(exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"{args.name}.pt")
    command = f"python models/train.py {args.name} --data DIR --epochs {epochs} --seed {args.seed}"
    if args.init:
        command = f"{command} --init models/weights/{args.name}.pt --lr {lr}"
    if args.bf16:
        command = f"{command} --threads {args.threads} --bf16"
    meta = {"name": args.name, "dataset": dataset, "epochs": epochs, "batch": args.batch, "peak_lr": lr,
            "weight_decay": wd, "seed": args.seed, "torch_test_accuracy": test_acc, "command": command}
    if args.bf16:
        meta["autocast"] = "bfloat16 (CPU, training forward + loss only)"
    prev = out / f"{args.name}.json"
    if args.init and prev.exists():  # keep the first stage in the record
        meta["previous_stage"] = json.loads(prev.read_text())
    (out / f"{args.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{args.name} test accuracy {test_acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
