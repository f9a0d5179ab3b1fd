"""Progress display for long stages: a rich bar on an interactive stderr, silence otherwise (CI, pipes)."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_enabled = True


def set_enabled(flag: bool) -> None:
    global _enabled
    _enabled = flag


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if not (_enabled and sys.stderr.isatty()):
        yield from items
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as p:
        task = p.add_task(description, total=total)
        for item in items:
            yield item
            p.advance(task)
