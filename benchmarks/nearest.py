#!/usr/bin/env python3
"""Benchmark the nearest-neighbour search of study/nearest.py against the study's loop.

For each case, Q random float32 query embeddings (--queries, default 1000)
are searched against N random float32 training embeddings of D dimensions
(standard normal, seed 0) for their nearest training row by cosine distance:

- this project: study.nearest.nearest_neighbors(queries, train, k=1), timed
  on the whole case;
- the study's way: a Python loop calling scipy.spatial.distance.cosine for
  every (query, training row) pair and keeping the smallest. Running it on a
  whole case would take hours, so it is timed on a subset (--loop-queries x
  --loop-train pairs) and scaled linearly to Q x N pairs. The output marks
  these times as estimates.

Each case runs in its own subprocess, so the peak resident memory
(getrusage ru_maxrss) belongs to that case alone. It includes the Python
interpreter, NumPy and the input arrays, and the table also lists the
memory the search added on top of the inputs. Times are wall-clock. The
CPU time of the process (all threads) is listed beside them: on a shared
machine a wall time far above CPU time / cores means other jobs took the
cores.

Prints a markdown table. Usage:
    python benchmarks/nearest.py [--cases 20000x128 200000x512 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CASES = ("20000x128", "20000x512", "200000x128", "200000x512")
TIME_LIMIT_S = 10.0
MEMORY_LIMIT_MB = 2048.0
TARGET_RATIO = 100.0


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS, which this benchmark does not handle).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _study_loop(queries, train, cosine) -> list[int]:
    """Return the nearest training row of each query the study's way: one scipy call per pair."""
    nearest = []
    for query in queries:
        best_index, best_distance = -1, float("inf")
        for row, vector in enumerate(train):
            distance = cosine(query, vector)
            if distance < best_distance:
                best_index, best_distance = row, distance
        nearest.append(best_index)
    return nearest


def run_case(n_train: int, dim: int, n_queries: int, loop_queries: int, loop_train: int,
             chunk: int, repeats: int) -> dict:
    """Time both searches on one case in this process and return the measurements.

    Each side runs ``repeats`` times and keeps its fastest run, the one that
    other jobs on a shared machine disturbed least.
    """
    sys.path.insert(0, str(REPO))
    import numpy as np
    from scipy.spatial.distance import cosine

    from study.nearest import nearest_neighbors

    rng = np.random.default_rng(0)
    train = rng.standard_normal((n_train, dim), dtype=np.float32)
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    # A small warm-up search loads every code path and BLAS before the timing.
    nearest_neighbors(queries[:2], train[:100], k=1)
    inputs_mb = _peak_rss_mb()

    search_s, search_cpu_s = float("inf"), float("inf")
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        indices, distances = nearest_neighbors(queries, train, k=1, chunk=chunk)
        elapsed = time.perf_counter() - start
        if elapsed < search_s:
            search_s, search_cpu_s = elapsed, time.process_time() - cpu_start
    search_peak_mb = _peak_rss_mb()

    subset_queries = queries[:loop_queries].astype(np.float64)
    subset_train = train[:loop_train].astype(np.float64)
    loop_s = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        loop_best = _study_loop(subset_queries, subset_train, cosine)
        loop_s = min(loop_s, time.perf_counter() - start)
    pairs = loop_queries * loop_train
    loop_estimate_s = loop_s / pairs * n_queries * n_train

    # Both searches must agree on the subset, or the comparison is meaningless.
    subset_indices, _ = nearest_neighbors(queries[:loop_queries], train[:loop_train], k=1)
    agree = bool((subset_indices[:, 0] == np.array(loop_best)).all())
    return {
        "n_train": n_train, "dim": dim, "n_queries": n_queries, "chunk": chunk, "repeats": repeats,
        "search_s": search_s, "search_cpu_s": search_cpu_s, "inputs_mb": inputs_mb, "search_peak_mb": search_peak_mb,
        "loop_pairs_timed": pairs, "loop_timed_s": loop_s, "loop_estimate_s": loop_estimate_s,
        "ratio": loop_estimate_s / search_s, "subset_agrees": agree,
        "finite_distances": bool(np.isfinite(distances).all()), "valid_indices": bool((indices >= 0).all()),
    }


def _machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    import numpy
    import scipy

    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(memory_gb, 1),
            "python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__}


def _format_seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.2f} s"


def print_table(results: list[dict], machine: dict, load_before: tuple, load_after: tuple,
                args: argparse.Namespace) -> None:
    print(f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GiB RAM; "
          f"Python {machine['python']}, NumPy {machine['numpy']}, SciPy {machine['scipy']}")
    print(f"Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; "
          f"after: {', '.join(f'{v:.2f}' for v in load_after)}")
    print(f"Study loop timed on {args.loop_queries} x {args.loop_train} pairs per case and scaled "
          f"linearly to {args.queries} x N (marked ~, an estimate). Fastest of {args.repeats} runs per side.")
    print()
    print("| N train | D | this project | its CPU time | study loop (~ estimate) | ratio | peak RSS "
          f"| added by search | < {TIME_LIMIT_S:.0f} s | < {MEMORY_LIMIT_MB / 1024:.0f} GB | subset agrees |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|:-:|")
    for r in results:
        under_time = "yes" if r["search_s"] < TIME_LIMIT_S else "no"
        under_memory = "yes" if r["search_peak_mb"] < MEMORY_LIMIT_MB else "no"
        print(f"| {r['n_train']:,} | {r['dim']} | {_format_seconds(r['search_s'])} "
              f"| {_format_seconds(r['search_cpu_s'])} | ~{_format_seconds(r['loop_estimate_s'])} | ~{r['ratio']:,.0f}x "
              f"| {r['search_peak_mb']:,.0f} MB | {r['search_peak_mb'] - r['inputs_mb']:,.0f} MB "
              f"| {under_time} | {under_memory} | {'yes' if r['subset_agrees'] else 'NO'} |")
    short = [r for r in results if r["ratio"] < TARGET_RATIO]
    if short:
        print(f"\nBelow the {TARGET_RATIO:.0f}x target: "
              + ", ".join(f"{r['n_train']}x{r['dim']}" for r in short))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES),
                        help="cases as NxD, training rows x dimensions (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=1000, help="query embeddings (default: 1000)")
    parser.add_argument("--chunk", type=int, default=20000,
                        help="training rows per step of nearest_neighbors (default: 20000)")
    parser.add_argument("--loop-queries", dest="loop_queries", type=int, default=10,
                        help="queries of the timed subset of the study's loop (default: 10)")
    parser.add_argument("--loop-train", dest="loop_train", type=int, default=5000,
                        help="training rows of the timed subset of the study's loop (default: 5000)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each side per case; the fastest counts (default: 3)")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    parser.add_argument("--one-case", dest="one_case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one_case:
        n_train, dim = (int(part) for part in args.one_case.split("x"))
        result = run_case(n_train, dim, args.queries, args.loop_queries, args.loop_train, args.chunk,
                          args.repeats)
        print(json.dumps(result))
        return 0

    machine = _machine()
    load_before = os.getloadavg()
    results = []
    for case in args.cases:
        command = [sys.executable, str(Path(__file__).resolve()), "--one-case", case,
                   "--queries", str(args.queries), "--chunk", str(args.chunk),
                   "--loop-queries", str(args.loop_queries), "--loop-train", str(args.loop_train),
                   "--repeats", str(args.repeats)]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            print(f"case {case} failed with exit status {completed.returncode}:\n{completed.stderr}",
                  file=sys.stderr)
            return 1
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    load_after = os.getloadavg()
    print_table(results, machine, load_before, load_after, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "load_before": load_before,
                                               "load_after": load_after, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
