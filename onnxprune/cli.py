"""The `onnxprune` command line: a click group over `onnxprune.api`.

User errors (`OnnxPruneError`) print one line and exit 2; nothing else is caught, so a traceback always means a bug.
"""
from __future__ import annotations

import sys

import click

from . import __version__
from .errors import OnnxPruneError


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OnnxPruneError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="onnxprune")
def main() -> None:
    """Post-training pruning of ONNX models: statistics, pruning, certification, benchmarks."""


def _register() -> None:
    from .commands.bench import bench_cmd
    from .commands.certify import certify_cmd
    from .commands.check import check_cmd
    from .commands.compress import compress_cmd
    from .commands.evaluate import eval_cmd
    from .commands.export import export_cmd
    from .commands.prune import prune_cmd
    from .commands.apply import apply_cmd
    from .commands.stats import stats_cmd

    for cmd in (compress_cmd, certify_cmd, export_cmd, eval_cmd, bench_cmd, check_cmd, prune_cmd, apply_cmd,
                stats_cmd):
        main.add_command(cmd)


_register()
