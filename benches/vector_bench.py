"""The data set and the hnswlib side of benches/vector_bench.sh.

    vector_bench.py gen DIR --n N --queries Q      write the data set to DIR
    vector_bench.py hnswlib DIR --m M --ef-construction EFC --ef EFS
                    --repeat R --threads T --out OUT.json [--reuse]
    vector_bench.py report HNSWLIB.json CAPSULE.json

The data imitates sentence embeddings rather than uniform noise (which has
no neighbourhood structure): a Gaussian mixture of 4096 unit centres with
log-normal cluster sizes, plus a 32-dimensional shared latent component and
small isotropic noise, each point scaled to unit length. Queries are drawn
the same way and held out. The exact top-k ground truth comes from blocked
matrix products. Files are raw little-endian: base.f32 (n × dims),
queries.f32, gt.i32 (row numbers), and meta.json.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

DIMS = 384
CENTRES = 4096
LATENT = 32
LATENT_NORM = 0.5
NOISE_NORM = 0.25
K = 10
SEED = 20260101
GEN_BLOCK = 100_000
GT_BLOCK = 65_536


def sample(rng, n, centres, weights, basis):
    """n points of the mixture, unit length, float32."""
    which = rng.choice(len(centres), size=n, p=weights)
    latent = rng.standard_normal((n, LATENT), dtype=np.float32) @ basis
    noise = rng.standard_normal((n, DIMS), dtype=np.float32) * (NOISE_NORM / np.sqrt(DIMS))
    x = centres[which] + latent + noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def gen(args):
    out = Path(args.dir)
    meta = {"n": args.n, "dims": DIMS, "queries": args.queries, "k": K, "seed": SEED,
            "centres": CENTRES}
    if (out / "meta.json").exists() and json.loads((out / "meta.json").read_text()) == meta:
        print(f"data set: reusing {out}", file=sys.stderr)
        return
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((CENTRES, DIMS), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 1.0, CENTRES)
    weights /= weights.sum()
    basis = rng.standard_normal((LATENT, DIMS), dtype=np.float32) * (
        LATENT_NORM / np.sqrt(LATENT * DIMS))
    started = time.perf_counter()
    with open(out / "base.f32", "wb") as f:
        for start in range(0, args.n, GEN_BLOCK):
            sample(rng, min(GEN_BLOCK, args.n - start), centres, weights, basis).tofile(f)
    queries = sample(rng, args.queries, centres, weights, basis)
    queries.tofile(out / "queries.f32")
    print(f"data set: {args.n} × {DIMS} in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    started = time.perf_counter()
    base = np.memmap(out / "base.f32", dtype=np.float32, mode="r", shape=(args.n, DIMS))
    best_s = np.full((args.queries, K), -np.inf, dtype=np.float32)
    best_i = np.zeros((args.queries, K), dtype=np.int64)
    for start in range(0, args.n, GT_BLOCK):
        scores = queries @ np.asarray(base[start:start + GT_BLOCK]).T
        top = np.argpartition(-scores, K, axis=1)[:, :K] if scores.shape[1] > K else \
            np.broadcast_to(np.arange(scores.shape[1]), (args.queries, scores.shape[1]))
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], axis=1)
        cand_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :K]
        best_s = np.take_along_axis(cand_s, keep, 1)
        best_i = np.take_along_axis(cand_i, keep, 1)
    best_i.astype("<i4").tofile(out / "gt.i32")
    (out / "meta.json").write_text(json.dumps(meta))
    print(f"ground truth: exact top-{K} in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def hnswlib_bench(args):
    import hnswlib

    d = Path(args.dir)
    meta = json.loads((d / "meta.json").read_text())
    n, dims, q, k = meta["n"], meta["dims"], meta["queries"], meta["k"]
    queries = np.fromfile(d / "queries.f32", dtype="<f4").reshape(q, dims)
    gt = np.fromfile(d / "gt.i32", dtype="<i4").reshape(q, k)

    saved = d / "hnswlib.bin"
    index = hnswlib.Index(space="ip", dim=dims)
    if args.reuse and saved.exists():
        index.load_index(str(saved), max_elements=n)
        build_s = None
        print(f"hnswlib: reusing {saved}", file=sys.stderr)
    else:
        base = np.fromfile(d / "base.f32", dtype="<f4").reshape(n, dims)
        index.init_index(max_elements=n, ef_construction=args.ef_construction, M=args.m,
                         random_seed=100)
        index.set_num_threads(args.threads)
        started = time.perf_counter()
        index.add_items(base, np.arange(n))
        build_s = time.perf_counter() - started
        print(f"hnswlib: built {n} in {build_s:.1f} s on {args.threads} threads",
              file=sys.stderr)
        del base
        index.save_index(str(saved))

    index.set_num_threads(1)
    rows = []
    for ef in [int(e) for e in args.ef.split(",")]:
        index.set_ef(ef)
        labels, _ = index.knn_query(queries, k=k)  # warm-up and recall
        recall = np.mean([len(set(labels[i]) & set(gt[i])) for i in range(q)]) / k
        rates = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            index.knn_query(queries, k=k)
            rates.append(q / (time.perf_counter() - started))
        qps = float(np.median(rates))
        print(f"hnswlib: ef {ef:4}  recall@{k} {recall:.4f}  {qps:8.0f} queries/s", file=sys.stderr)
        rows.append({"ef": ef, "recall": float(recall), "qps": qps})
    report = {
        "name": "hnswlib " + getattr(hnswlib, "__version__", ""),
        "build_s": build_s,
        "build_threads": args.threads,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))


def report(args):
    hnsw = json.loads(Path(args.hnswlib).read_text())
    ours = json.loads(Path(args.capsule).read_text())
    by_ef = {r["ef"]: r for r in hnsw["rows"]}
    print("| ef | hnswlib recall@10 | hnswlib q/s | capsule recall@10 | capsule q/s | capsule/hnswlib q/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in ours["rows"]:
        h = by_ef[r["ef"]]
        print(f"| {r['ef']} | {h['recall']:.4f} | {h['qps']:.0f} | {r['recall']:.4f} | "
              f"{r['qps']:.0f} | {r['qps'] / h['qps']:.2f}× |")
    print()
    if hnsw["build_s"] is not None and ours["build_s"] is not None:
        print(f"build: hnswlib {hnsw['build_s']:.1f} s ({hnsw['build_threads']} threads), "
              f"capsule {ours['build_s']:.1f} s ({ours['build_threads']} thread, including "
              f"the SQLite inserts); capsule save {ours['save_s']:.1f} s, "
              f"reopen {ours['reopen_s']:.1f} s")
    else:
        print(f"build: indexes reused from an earlier run; capsule reopen "
              f"{ours['reopen_s']:.1f} s")
    print(f"peak RSS: hnswlib process {hnsw['peak_rss_mib']} MiB, "
          f"capsule process {ours['peak_rss_mib']} MiB")

    def first(rows):
        return next((r for r in rows if r["recall"] >= 0.95), None)

    h, c = first(hnsw["rows"]), first(ours["rows"])
    if h is None or c is None:
        print("recall@10 >= 0.95: not reached by "
              + " and ".join(n for n, r in (("hnswlib", h), ("capsule", c)) if r is None)
              + " within the ef list")
        return
    print(f"recall@10 >= 0.95: hnswlib at ef {h['ef']} {h['qps']:.0f} q/s, capsule at ef "
          f"{c['ef']} {c['qps']:.0f} q/s: capsule/hnswlib = {c['qps'] / h['qps']:.2f}× "
          f"(targets: >= 1×, and >= 3000 q/s per core: "
          f"{'met' if c['qps'] >= 3000 and c['qps'] >= h['qps'] else 'NOT met'})")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--queries", type=int, default=1000)
    h = sub.add_parser("hnswlib")
    h.add_argument("dir")
    h.add_argument("--m", type=int, required=True)
    h.add_argument("--ef-construction", type=int, required=True)
    h.add_argument("--ef", required=True)
    h.add_argument("--repeat", type=int, default=3)
    h.add_argument("--threads", type=int, default=2)
    h.add_argument("--out", required=True)
    h.add_argument("--reuse", action="store_true")
    r = sub.add_parser("report")
    r.add_argument("hnswlib")
    r.add_argument("capsule")
    args = p.parse_args()
    {"gen": gen, "hnswlib": hnswlib_bench, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
