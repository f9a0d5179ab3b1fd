"""onnxprune: make a trained network smaller and faster after training, on its ONNX file, and prove it is still good.

    import onnxprune
    r = onnxprune.compress("model.onnx", ratio=0.5)          # prune, write, evaluate, benchmark
    print(r.summary())
    run = onnxprune.certify("model.onnx", "calib.npz", tolerance=0.01)   # Learn-then-Test: the largest safe ratio

Functions (each mirrors a CLI command and returns a result object with `to_dict()`; see `help(onnxprune.api)`):
compress, prune, apply, certify, recover, stats, evaluate, check, bench, export. Settings of a pruning run:
`PruneSettings`; a saved pruning decision: `Plan`; the one exception users see: `OnnxPruneError`.
They are imported on first use, so `import onnxprune` (and `onnxprune --help`) stays fast.
"""

import sys
import types


def _interrupted_at_start_up(kind, value, tb, _default=sys.excepthook) -> None:
    """Ctrl-C while the `onnxprune` command is still importing (before `onnxprune.cli` can catch it): one line and
    exit code 130, as at any later time, instead of Python's traceback."""
    if issubclass(kind, KeyboardInterrupt):
        import os

        try:
            sys.stderr.write("error: interrupted\n")
            sys.stderr.flush()
        finally:
            os._exit(130)
    _default(kind, value, tb)


_argv = getattr(sys, "argv", None) or [""]
if _argv[0].replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".exe") == "onnxprune":
    sys.excepthook = _interrupted_at_start_up  # the console script only: importing the library changes nothing

__version__ = "0.1.0"

_API = ("compress", "prune", "apply", "certify", "recover", "stats", "evaluate", "check", "bench", "export")
_OTHER = {"PruneSettings": "select.plan", "Plan": "select.plan", "OnnxPruneError": "errors", "Stats": "stats"}
__all__ = ["__version__", "api", *_API, *_OTHER]


class _Package(types.ModuleType):
    """Three subpackages share a name with an API function (`stats`, `certify`, `recover`: the stage and the command
    that runs it). Importing a subpackage would set it as an attribute here and hide the function, so the package
    keeps the function; the subpackages stay importable by their full names (`onnxprune.stats.collect`).
    Import their modules with `from onnxprune.recover import distill`: `import onnxprune.recover.distill as m`
    resolves `onnxprune.recover` as an attribute, finds the function, and fails."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    import importlib

    if name == "api" or name in _API:
        api = importlib.import_module(".api", __name__)
        return api if name == "api" else getattr(api, name)
    if name in _OTHER:
        return getattr(importlib.import_module(f".{_OTHER[name]}", __name__), name)
    raise AttributeError(f"module 'onnxprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
