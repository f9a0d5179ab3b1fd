"""The CLI end to end: eval on the bundled model, JSON output, and one-line errors with exit code 2."""
from __future__ import annotations

import json

from click.testing import CliRunner

from onnxprune import __version__
from onnxprune.cli import main

from builders import LENET300


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_every_command_has_help():
    for name in main.commands:
        r = run(name, "--help")
        assert r.exit_code == 0, name
        assert "Usage" in r.output


def test_eval_bundled_lenet_json(mnist_small):
    r = run("eval", LENET300, "--data", mnist_small, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n"] == 500 and d["accuracy"] > 0.97 and d["agreement"] is None


def test_eval_agreement_with_itself_is_one(mnist_small):
    r = run("eval", LENET300, "--data", mnist_small, "--reference", LENET300, "--json")
    assert json.loads(r.stdout)["agreement"] == 1.0


def test_errors_are_one_line_exit_2(tmp_path, mnist_small):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    cases = [("eval", tmp_path / "missing.onnx", "--data", mnist_small),
             ("eval", bad, "--data", mnist_small),
             ("eval", LENET300, "--data", tmp_path / "missing.npz")]
    for args in cases:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output
        assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output


def test_wrong_data_shape_is_explained(tmp_path):
    import numpy as np

    p = tmp_path / "cifar_like.npz"
    np.savez(p, x=np.zeros((2, 3, 32, 32), np.uint8))
    r = run("eval", LENET300, "--data", p)
    assert r.exit_code == 2 and "model expects input: (N,1,28,28)" in r.output


def test_min_channels_reaches_the_plan(tmp_path):
    model = LENET300.parent / "lenet5bn_mnist.onnx"
    plan_path = tmp_path / "plan.json"
    r = run("prune", model, "--criterion", "bn", "--ratio", 0.8, "--round-to", 1, "--min-channels", 5,
            "--no-reconstruct", "-o", tmp_path / "p.onnx", "--plan-out", plan_path)
    assert r.exit_code == 0, r.output
    from onnxprune.select.plan import Plan

    plan = Plan.from_json(plan_path.read_text())
    assert plan.settings["min_channels"] == 5 and plan.channels
    assert all(len(kept) >= 5 for kept in plan.channels.values())


def test_no_library_module_imports_the_cli():
    """The CLI sits on top: only cli.py and commands/ may import onnxprune.cli or onnxprune.commands."""
    from pathlib import Path

    import onnxprune

    root = Path(onnxprune.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.relative_to(root).parts[0] not in ("commands", "cli.py")
                 and any(m.startswith(("onnxprune.cli", "onnxprune.commands")) for m in _imported(p, root))]
    assert offenders == []


def _imported(path, root) -> list[str]:
    """Absolute names of every module (and `from` name) the file imports, relative imports resolved."""
    import ast

    package = ["onnxprune", *path.relative_to(root).parts[:-1]]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names
