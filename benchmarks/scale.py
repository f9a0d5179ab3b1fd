"""Cost of each pipeline stage against the number of samples N, as a ratio to one plain onnxruntime inference pass.

    python benchmarks/scale.py MODEL --shape 3,224,224 --classes 1000 --n 512,2048 [--ray] [--certify] \\
        [--data-dir /tmp/scale_data] [--json out.json]
    python benchmarks/scale.py MODEL --refit DATA      # the re-fit alone (A/B: PYTHONPATH=<an older onnxprune>)

For each N: random data (`make_data.py`'s generator: seeded normal images, uniform labels, `.npz` shards of 512),
then, each in a fresh child process (so peak memory is its own):
  * plain      one onnxruntime pass over the N samples (the model as given, batch as the pipeline feeds it);
  * pipeline   statistics (`prepare`: the pass + scores) → selection + rewrite (`select` + `apply`, checked) →
               least-squares re-fit (`reconstruct`), ratio 0.5, F-screen; CPU seconds per stage and the peak RSS
               reached by the end of each stage (cumulative: a stage's peak includes what the ones before held);
  * ray        (--ray) the same with the statistics pass as tasks on a local 2-worker Ray (started before timing;
               workers' CPU and memory are not in the child's figures, so Ray rows compare wall time);
  * certify    (--certify) `certify` with the default 50/50 split, grid 0.25,0.5, tolerance 0.05: statistics on the
               build half, each candidate built (re-fit) and evaluated on the certification half; with --ray also
               on the local 2-worker Ray (statistics and evaluations as tasks), and its certificate compared.
onnxruntime runs one intra-op thread everywhere (the machine is shared); numpy/BLAS one thread. Ratios are CPU
seconds over the plain pass's CPU seconds in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r'''
import json, resource, sys, time
import onnxruntime as ort

class _OneThread(ort.SessionOptions):  # every session of the pipeline: one intra-op thread
    def __init__(self):
        super().__init__()
        self.intra_op_num_threads = 1
        self.inter_op_num_threads = 1
ort.SessionOptions = _OneThread

from onnxprune.io.data import load_dataset
from onnxprune.io.model import load_model
from onnxprune.progress import set_enabled
set_enabled(False)

kind, model_path, data_path = sys.argv[1:4]
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {}
model = load_model(model_path)
data = load_dataset(data_path, model)

def stage(name, fn):
    c, w = time.process_time(), time.perf_counter()
    r = fn()
    out[name] = {"cpu": time.process_time() - c, "wall": time.perf_counter() - w, "peak": peak()}
    return r

if kind == "plain":
    from onnxprune.io.runtime import make_session
    sess = make_session(model, threads=1)
    def plain():
        for feed in data.batches(256):
            sess.run(None, feed)
    stage("plain", plain)
elif kind in ("pipeline", "ray"):
    from onnxprune.select.plan import PruneSettings
    from onnxprune.workflows.prune import prepare
    settings = PruneSettings(ratio=0.5)
    ray = None
    if kind == "ray":
        from onnxprune.stats.distributed import ray_connect
        t = time.perf_counter()
        ray_connect("local", 2)
        out["ray_start_wall"] = time.perf_counter() - t
        ray = "local"
    prep = stage("statistics", lambda: prepare(model, data, settings, ray=ray))
    mode = prep.mode
    plan = stage("selection", lambda: mode.select(model, prep.scores, 0.5, settings))
    pruned = stage("rewrite", lambda: mode.apply(model, plan, probe=data))
    stage("refit", lambda: mode.reconstruct(model, pruned, plan, data, settings))
elif kind == "refit":  # the re-fit alone: the same statistics and plan, then `reconstruct` timed
    from onnxprune.select.plan import PruneSettings
    from onnxprune.workflows.prune import prepare
    settings = PruneSettings(ratio=0.5)
    prep = prepare(model, data, settings)
    plan = prep.mode.select(model, prep.scores, 0.5, settings)
    pruned = prep.mode.apply(model, plan, probe=data)
    out["before_refit_peak"] = peak()
    stage("refit", lambda: prep.mode.reconstruct(model, pruned, plan, data, settings))
elif kind in ("certify", "certify_ray"):
    from onnxprune.certify import parse_grid
    from onnxprune.select.plan import PruneSettings
    from onnxprune.workflows.certify import run
    ray = None
    if kind == "certify_ray":
        from onnxprune.stats.distributed import ray_connect
        ray_connect("local", 2)
        ray = "local"
    r = stage("certify", lambda: run(model, data, PruneSettings(), parse_grid("0.25,0.5"), 0.05, 0.1, ray=ray))
    out["certificate"] = r.to_dict()
print(json.dumps(out))
'''


def make_data(folder: Path, n: int, shape: str, classes: int) -> Path:
    if not (folder / "y.npy").exists() and not any(folder.glob("*.npz")):
        subprocess.run([sys.executable, str(HERE / "make_data.py"), str(folder), "--n", str(n), "--shape", shape,
                        "--classes", str(classes), "--layout", "shards"], check=True)
    return folder


def child(kind: str, model: str, data: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", CHILD, kind, model, str(data)], capture_output=True, text=True,
                       env=env)
    if p.returncode:
        raise SystemExit(f"{kind} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--shape", default="3,32,32")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--n", default="512,2048,8192")
    ap.add_argument("--ray", action="store_true")
    ap.add_argument("--certify", action="store_true")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--refit", metavar="DATA", help="only time the re-fit on DATA (an .npz or folder) and exit")
    a = ap.parse_args()
    if a.refit:
        r = child("refit", a.model, Path(a.refit))
        print(f"re-fit {r['refit']['cpu']:.2f} CPU-s, peak {r['refit']['peak'] / 2**20:.0f} MB "
              f"(before the re-fit {r['before_refit_peak'] / 2**20:.0f} MB)")
        return
    base = Path(a.data_dir or tempfile.mkdtemp(prefix="scale_"))
    rows = []
    for n in (int(v) for v in a.n.split(",")):
        data = make_data(base / f"{Path(a.model).stem}_{a.shape.replace(',', 'x')}_{n}", n, a.shape, a.classes)
        r = {"model": Path(a.model).name, "n": n, "plain": child("plain", a.model, data)["plain"]}
        r["pipeline"] = child("pipeline", a.model, data)
        if a.ray:
            r["ray"] = child("ray", a.model, data)
        if a.certify:
            r["certify"] = child("certify", a.model, data)
            if a.ray:
                r["certify_ray"] = child("certify_ray", a.model, data)
                r["certify_equal"] = r["certify_ray"]["certificate"] == r["certify"]["certificate"]
        rows.append(r)
        print(json.dumps(r), flush=True)
        report(rows)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def report(rows: list[dict]) -> None:
    """The Markdown table: CPU seconds and × plain per stage, peak RSS (GB) reached by the end of the stage."""
    print("\n| model | N | plain pass CPU s | statistics | selection + rewrite | re-fit | stats+rewrite+re-fit "
          "| peak GB (stats / +rewrite / +re-fit) | Ray stats wall (× single wall) | certification |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, s = r["plain"]["cpu"], r["pipeline"]
        sel = s["selection"]["cpu"] + s["rewrite"]["cpu"]
        total = s["statistics"]["cpu"] + sel + s["refit"]["cpu"]
        cell = lambda c: f"{c:.1f} s ({c / p:.2f}×)"
        gb = lambda b: f"{b / 2**30:.2f}"
        ray = "-"
        if "ray" in r:
            rw, sw = r["ray"]["statistics"]["wall"], s["statistics"]["wall"]
            ray = f"{rw:.1f} s ({sw / rw:.2f}× faster)"
        cert = "-"
        if "certify" in r:
            c = r["certify"]["certify"]
            cert = f"{cell(c['cpu'])}, {gb(c['peak'])} GB"
            if "certify_ray" in r:
                cr = r["certify_ray"]["certify"]
                cert += (f"; Ray {cr['wall']:.1f} s wall ({c['wall'] / cr['wall']:.2f}× faster), same certificate: "
                         f"{'yes' if r['certify_equal'] else 'NO'}")
        print(f"| {r['model']} | {r['n']:,} | {p:.1f} | {cell(s['statistics']['cpu'])} | {cell(sel)} | "
              f"{cell(s['refit']['cpu'])} | **{total / p:.2f}×** | {gb(s['statistics']['peak'])} / "
              f"{gb(s['rewrite']['peak'])} / {gb(s['refit']['peak'])} | {ray} | {cert} |", flush=True)


if __name__ == "__main__":
    main()
