"""How a tensor's channel axis is made of channel groups.

A *space* is one set of channels created by one producer (a Conv's output channels, the model input, the output of
an op we cannot see through). A tensor's channel axis is a sequence of segments, each a contiguous run of one
space's channels: a Conv output is one full segment; a Concat output is the segments of its inputs in order; a
Split/Slice output is a sub-range; after Flatten every channel stands for `repeat` consecutive features.
Index of channel c of a segment at position p: p + (c - lo) * repeat + r, r < repeat.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Seg:
    space: int  # raw space id (resolve with the tracer's union-find)
    lo: int  # channel range [lo, hi) of the space laid out here
    hi: int
    repeat: int = 1  # features per channel (Flatten: H*W)

    @property
    def width(self) -> int:
        return (self.hi - self.lo) * self.repeat


Layout = tuple[Seg, ...]


def width(layout: Layout) -> int:
    return sum(s.width for s in layout)


def positions(layout: Layout) -> Iterator[tuple[int, Seg]]:
    """(start index on the axis, segment) pairs."""
    p = 0
    for s in layout:
        yield p, s
        p += s.width


def flatten(layout: Layout, hw: int) -> Layout:
    """Channels → features: each channel becomes hw consecutive features."""
    return tuple(replace(s, repeat=s.repeat * hw) for s in layout)


def sub(layout: Layout, start: int, end: int) -> Layout:
    """The segments covering axis indices [start, end); ValueError if a cut falls inside one channel's features."""
    out = []
    for p, s in positions(layout):
        a, b = max(start, p), min(end, p + s.width)
        if a >= b:
            continue
        if (a - p) % s.repeat or (b - p) % s.repeat:
            raise ValueError("cut inside a flattened channel")
        out.append(Seg(s.space, s.lo + (a - p) // s.repeat, s.lo + (b - p) // s.repeat, s.repeat))
    return tuple(out)
