"""Best-effort control of the BLAS thread count while statistics are accumulated.

During the statistics pass onnxruntime already uses the cores; multi-threaded OpenBLAS on the small per-batch
GEMMs of the accumulators then mostly waits on busy cores (measured 3–8× slower than one thread on a 2-core box).
`single_threaded_blas()` pins every loaded OpenBLAS (numpy's and scipy's builds) to one thread and restores the
previous count afterwards. No-op where the library or the symbols are not found.
"""
from __future__ import annotations

import ctypes
import functools
import sys
from contextlib import contextmanager

_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
            ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
            ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
            ("openblas_set_num_threads", "openblas_get_num_threads"))


@functools.cache
def _libs() -> list[tuple]:
    """The loaded OpenBLAS builds' (set, get) thread-count functions; looked up once (reading /proc/self/maps and
    opening the libraries cost ~2 ms, a noticeable share of a small model's statistics pass). numpy's and scipy's
    builds are both loaded by then: the accumulators import scipy.linalg.blas."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
    except OSError:
        return []
    found = []
    for p in paths:
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        for s, g in _SYMBOLS:
            if hasattr(lib, s) and hasattr(lib, g):
                found.append((getattr(lib, s), getattr(lib, g)))
                break
    return found


@contextmanager
def single_threaded_blas():
    libs = _libs()
    before = []
    for set_, get in libs:
        try:
            before.append(int(get()))
            set_(1)
        except Exception:  # noqa: BLE001 - best effort only
            before.append(None)
    try:
        yield
    finally:
        for (set_, _), n in zip(libs, before):
            if n:
                set_(n)
