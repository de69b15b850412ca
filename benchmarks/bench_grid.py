"""Wall time of a reproduce grid with --jobs 1 against --jobs 2, measured in one run.

Runs `python -m qdm reproduce table1` on the same small grid (fast preset training, N = 256
DDIM-50 samples per cell by default, so that a cell is real work and not process start-up) twice, each time from scratch in
its own temporary folder (nothing cached: training, sampling, Inception features and FID all
run), first with one process, then with two worker processes, and prints both wall times and
their ratio.

    .venv/bin/python benchmarks/bench_grid.py [--preset fast] [--digits 0,1] [--out results/bench_grid.md]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def grid_seconds(jobs: int, preset: str, digits: str, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory(prefix=f"qdm-grid-{jobs}-") as tmp:
        env = {**os.environ, "QDM_CACHE": str(Path(tmp) / "cache")}
        cmd = [sys.executable, "-m", "qdm", "reproduce", "table1", "--preset", preset, "--digits", digits,
               "--jobs", str(jobs), "--runs-dir", str(Path(tmp) / "runs"), "--results-dir", str(Path(tmp) / "results"),
               "--device", "cpu", "--no-progress", *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fast")
    p.add_argument("--digits", default="0,1")
    p.add_argument("--out", help="also write the Markdown report here")
    p.add_argument("--n", default="256", help="images per cell (protocol --n; default 256)")
    p.add_argument("--sampler-steps", default="50", help="DDIM steps per image (default 50)")
    a = p.parse_args()
    extra = ["--n", a.n, "--sampler", "ddim", "--steps", a.sampler_steps]
    load = os.getloadavg()
    one, two = grid_seconds(1, a.preset, a.digits, extra), grid_seconds(2, a.preset, a.digits, extra)
    cells = 2 * len(a.digits.split(","))
    report = (f"reproduce table1 --preset {a.preset} --digits {a.digits} {' '.join(extra)} ({cells} cells), "
              f"{os.cpu_count()} CPU cores, "
              f"load average before {load[0]:.2f}\n\n| jobs | wall seconds | speed-up |\n|---:|---:|---:|\n"
              f"| 1 | {one:.1f} | 1.00 |\n| 2 | {two:.1f} | {one / two:.2f} |\n")
    print(report)
    if a.out:
        Path(a.out).write_text(report)


if __name__ == "__main__":
    main()
