"""The `onnxprune` command line: a click group over `onnxprune.api`.

Every failure is ONE line on stderr starting `error:` and exit code 2: user errors (`OnnxPruneError`), click's usage
errors (unknown option, bad value, missing argument) and, as a last resort, an unexpected exception (named as an
internal error — a bug — with the traceback shown when ONNXPRUNE_TRACEBACK=1). Ctrl-C at any time, start-up
included, is `error: interrupted` and exit code 130. When a failure comes after a model was written, the line says
which files were written.
"""
from __future__ import annotations

import errno
import os
import sys

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int = EXIT_ERROR) -> None:
    """Print the one error line and exit."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    text = "; ".join(lines) if lines else "failed"
    written = _written()
    if written:
        text += f" ({', '.join(written)} had already been written)"
    try:
        sys.stderr.write(f"error: {text}\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - a closed stderr: the exit code still tells
        pass
    raise SystemExit(code)


def _written() -> list[str]:
    model = sys.modules.get("onnxprune.io.model")
    return [str(p) for p in getattr(model, "WRITTEN", [])]


try:  # Ctrl-C while the (heavy) imports run is one line too
    import click

    from . import __version__
    from .errors import OnnxPruneError
except KeyboardInterrupt:
    _fail("interrupted", EXIT_INTERRUPTED)


class _Interrupted(Exception):
    """Ctrl-C inside a command, carried past click's own handling (which prints an extra blank line)."""


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        model = sys.modules.get("onnxprune.io.model")
        if model is not None:
            model.WRITTEN.clear()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except (_Interrupted, KeyboardInterrupt, click.exceptions.Abort):
            _fail("interrupted", EXIT_INTERRUPTED)
        except click.exceptions.NoArgsIsHelpError as e:  # `onnxprune` alone: the help, not an error
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.ClickException as e:
            hint = ""
            ctx = getattr(e, "ctx", None)
            if isinstance(e, click.UsageError) and ctx is not None:
                hint = f" (see '{ctx.command_path} --help')"
            _fail(e.format_message() + hint)
        except OnnxPruneError as e:
            _fail(str(e))
        except SystemExit:
            raise
        except OSError as e:  # a file the user named: unreadable, unwritable, disk full
            if e.errno == errno.EPIPE:  # `onnxprune … | head`: the reader left; nothing to report
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - flushed at exit instead of the closed pipe
                sys.exit(0)
            where = f"{e.filename}: " if e.filename else ""
            _fail(f"{where}{e.strerror or type(e).__name__}")
        except Exception as e:  # noqa: BLE001 - a bug: still one line, the traceback on request
            if _caused_by_interrupt(e):  # e.g. Ctrl-C inside an extension's import surfaces as an ImportError
                _fail("interrupted", EXIT_INTERRUPTED)
            if os.environ.get("ONNXPRUNE_TRACEBACK"):
                raise
            first = (str(e).strip().splitlines() or [""])[0][:300]
            _fail(f"internal error ({type(e).__name__}{': ' + first if first else ''}); this is a bug in onnxprune — "
                  f"please report it (ONNXPRUNE_TRACEBACK=1 shows the traceback)")
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _caused_by_interrupt(e: BaseException) -> bool:
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, KeyboardInterrupt):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


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
    from .commands.recover import recover_cmd
    from .commands.stats import stats_cmd

    for cmd in (compress_cmd, certify_cmd, export_cmd, eval_cmd, bench_cmd, check_cmd, prune_cmd, apply_cmd,
                recover_cmd, stats_cmd):
        main.add_command(cmd)


try:
    _register()
except KeyboardInterrupt:
    _fail("interrupted", EXIT_INTERRUPTED)
