"""Progress of long stages: a live bar on an interactive stderr, one plain line per stage (with its elapsed time)
otherwise, nothing when switched off (`set_enabled(False)`, the CLI's `--quiet`).

Stages say what they are doing as they do it, so a four-minute run is never silent; `say` prints a note at the
moment it is decided (e.g. which data file was chosen) and remembers it, so the final summary need not repeat it.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_enabled = True
_said: list[str] = []


def set_enabled(flag: bool) -> None:
    global _enabled
    _enabled = flag


def said() -> list[str]:
    """The notes already printed by `say` in this process."""
    return list(_said)


def say(message: str) -> None:
    """One line on stderr now (when enabled), remembered."""
    _said.append(message)
    if _enabled:
        print(message, file=sys.stderr, flush=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield `items`, showing progress: a transient bar on a terminal, else one line when the stage ends."""
    if not _enabled:
        yield from items
        return
    start = time.perf_counter()
    n = 0
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import Progress, TimeElapsedColumn

        with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=Console(stderr=True),
                      transient=True) as p:
            task = p.add_task(description, total=total)
            for item in items:
                yield item
                n += 1
                p.advance(task)
    else:
        for item in items:
            yield item
            n += 1
    print(f"{description}: {n} step{'s' if n != 1 else ''} in {time.perf_counter() - start:.1f} s", file=sys.stderr,
          flush=True)
