"""Sweep machinery cost: 8 smoke trials with 1 worker vs 2, and the overhead per trial vs a plain run.

    python benchmarks/sweep.py [--trials 8] [--json]

Each sweep is `smoke.toml` (limit_batches=1, no remote sinks, no Grad-CAM) over seeds 1..N in a fresh
temporary output root holding a copy of the warm synthetic-data cache; the plain run is `qsight run` of
the same spec (seed 1, the second of two runs: data cache and file caches warm), timed as a process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = ["train.limit_batches=1", "explain.enabled=false", "sinks={}"]


def _qsight(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qsight", "-q", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def sweep_seconds(trials: int, workers: int, cache: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(cache, Path(tmp) / "cache")  # the plain run's data cache: both start warm
        sets = [*SETS, f'output.root="{tmp}"']
        path = Path(tmp) / "bench.toml"
        path.write_text(f'name = "bench"\nbase = "{ROOT / "experiments" / "smoke.toml"}"\n'
                        f"seeds = {list(range(1, trials + 1))}\nset = {json.dumps(sets)}\n")
        return _qsight("sweep", str(path), "--workers", str(workers))


def plain_seconds(root: Path) -> float:
    args = [f"--set={s}" for s in [*SETS, f'output.root="{root}"', "seed=1"]]
    _qsight("run", str(ROOT / "experiments" / "smoke.toml"), *args)  # warm the data cache, imports
    return _qsight("run", str(ROOT / "experiments" / "smoke.toml"), *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain, cache = plain_seconds(Path(tmp)), Path(tmp) / "cache"
        one, two = sweep_seconds(args.trials, 1, cache), sweep_seconds(args.trials, 2, cache)
    result = {
        "trials": args.trials, "plain_run_s": round(plain, 2), "sweep_1_worker_s": round(one, 2),
        "sweep_2_workers_s": round(two, 2), "ratio_2_vs_1": round(two / one, 3),
        "overhead_per_trial": round((one / args.trials - plain) / plain, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
