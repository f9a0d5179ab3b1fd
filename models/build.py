"""Export trained weights to the bundled .onnx files and write the model cards (models/README.md).

    python models/build.py            # every model whose weights exist in models/weights/

Each card's accuracy is measured here, from the exported .onnx file on the bundled evaluation set, through
onnxprune's own evaluation, so `onnxprune eval models/X.onnx --data calib_data/Y_eval.npz` reproduces it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = {  # name: (onnx file, input shape, eval set, description)
    "lenet300": ("lenet300_mnist.onnx", "1,1,28,28", "mnist_eval.npz",
                 "LeNet-300-100 (784-300-100-10, ReLU), the screening paper's fully connected net"),
    "lenet5bn": ("lenet5bn_mnist.onnx", "1,1,28,28", "mnist_eval.npz",
                 "LeNet-5-style conv net with BatchNorm: conv5x5(32)-BN-ReLU-pool, conv5x5(64)-BN-ReLU-pool, FC 256, FC 10"),
    "resnet20": ("resnet20_cifar10.onnx", "1,3,32,32", "cifar10_eval.npz",
                 "CIFAR ResNet-20: 3 stages x 3 basic blocks (16/32/64 channels), residual Adds, BN, 1x1 projection shortcuts"),
    "densenet": ("densenet_cifar10.onnx", "1,3,32,32", "cifar10_eval.npz",
                 "Small DenseNet: 3 dense blocks x 4 BN-ReLU-Conv3x3 layers, growth 12, 1x1 transitions + avg-pool; Concat-heavy"),
    "mobilenetv2": ("mobilenetv2_cifar10.onnx", "1,3,32,32", "cifar10_eval.npz",
                    "Narrow MobileNetV2: inverted residuals (expansion 3), depthwise 3x3, squeeze-excitation Mul (HardSigmoid)"),
}
CALIB = {"mnist_eval.npz": "mnist_calib.npz", "cifar10_eval.npz": "cifar10_calib.npz"}


def onnxprune(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "onnxprune.cli", *args], check=True, capture_output=True,
                          text=True, cwd=REPO).stdout


def main() -> None:
    import onnx

    from onnxprune.measure.evaluate import evaluate
    from onnxprune.io.data import load_dataset
    from onnxprune.units.count import count
    from onnxprune.io.model import load_model

    cards = []
    for name, (fname, shape, eval_set, desc) in MODELS.items():
        weights = HERE / "weights" / f"{name}.pt"
        if not weights.exists():
            print(f"{name}: no weights yet (train with models/train.py), skipped")
            continue
        meta = json.loads((HERE / "weights" / f"{name}.json").read_text())
        out = HERE / fname
        from onnxprune.io.export import export

        r = export(f"{HERE / 'archs.py'}:{name}", out, tuple(int(v) for v in shape.split(",")), weights=weights)
        model = load_model(out)
        acc = evaluate(model, load_dataset(REPO / "calib_data" / eval_set, model)).accuracy
        c = count(model)
        nodes = sorted({n.op_type for n in onnx.load(out).graph.node})
        print(f"{name}: accuracy {acc:.4f}, params {c.params:,}, MACs {c.macs:,}, max |torch - ort| {r.max_abs_diff:.2g}")
        recipe = (f"SGD Nesterov momentum 0.9, one-cycle LR (peak {meta['peak_lr']}), weight decay "
                  f"{meta['weight_decay']}, batch {meta['batch']}, {meta['epochs']} epochs, seed {meta['seed']}, CPU")
        train_cmd = f"`{meta['command'].replace('DIR', '../shared/data')}`"
        if "previous_stage" in meta:
            first = meta["previous_stage"]
            recipe = (f"SGD Nesterov momentum 0.9, weight decay {meta['weight_decay']}, batch {meta['batch']}, seed "
                      f"{meta['seed']}, CPU: a one-cycle run of {first['epochs']} epochs (peak LR {first['peak_lr']}; "
                      f"{first['torch_test_accuracy']:.4f} test), then a second one-cycle of {meta['epochs']} epochs "
                      f"(peak LR {meta['peak_lr']}) from those weights")
            train_cmd = (f"`{first['command'].replace('DIR', '../shared/data')}` then "
                         f"`{meta['command'].replace('DIR', '../shared/data')}`")
        cards.append(f"""## `models/{fname}`

{desc}.

| | |
|---|---|
| data | {'MNIST: trained on the 50k train split (random ±2 px shifts)' if meta['dataset'] == 'mnist' else 'CIFAR-10 (JPEG copies): trained on 45k train images (5k held out as calibration data), random crop (pad 4) + horizontal flip'} |
| recipe | {recipe} |
| train command | {train_cmd} |
| export command | `onnxprune export models/archs.py:{name} --weights models/weights/{name}.pt --input-shape {shape} -o models/{fname}` |
| input | `input`: float32 (N,{shape.split(',', 1)[1]}) raw pixels 0–255 (normalisation is inside the graph); output `logits` (N,10) |
| **test accuracy** | **{acc:.4f}** on `calib_data/{eval_set}` ({'MNIST test' if 'mnist' in eval_set else 'CIFAR-10 test'}, 10,000 images) — `onnxprune eval models/{fname} --data calib_data/{eval_set}` |
| calibration set | `calib_data/{CALIB[eval_set]}` |
| parameters | {c.params:,} |
| MACs (batch 1) | {c.macs:,} |
| ops | {', '.join(nodes)} |
""")
    header = """# Bundled models

Small trained models for trying onnxprune and for its benchmarks. Architectures are in `archs.py`, training in
`train.py` (seeded, resumable), export and these cards in `build.py` (`python models/build.py` re-exports every
model and re-measures every number below from the `.onnx` file). `weights/` holds the trained state_dicts and the
training metadata. CI never trains.

"""
    (HERE / "README.md").write_text(header + "\n".join(cards))


if __name__ == "__main__":
    main()
