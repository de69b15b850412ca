"""A 2-thread torch job beside another busy process: OpenMP's spin-waiting against passive waiting.

torch's OpenMP threads spin while they wait for each other (OMP_WAIT_POLICY=ACTIVE, the usual
default), which is free on idle cores and ruinous on shared ones: a spinning thread holds a core
that the other process needs, and each parallel region waits for a descheduled partner. This
script runs the same workload (U-Net forward passes of the sampler's batch, the shape of a cell's
sampling) in a fresh process per setting, alone and beside a competitor (the same workload,
started at the same time), and prints the slow-down each policy suffers, in one run.

    .venv/bin/python benchmarks/bench_threads.py --out results/bench_threads.md

qdm sets OMP_WAIT_POLICY=PASSIVE where it starts Python itself (qdm/__init__.py, before torch is
imported, and so in every grid worker it spawns; the Makefile for the tests) unless it is set.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

WORK = ("import time, torch; from qdm.unet import UNet; torch.manual_seed(0); m = UNet().eval(); "
        "x, t = torch.randn(250, 1, 28, 28), torch.full((250,), 500); t0 = time.perf_counter()\n"
        "with torch.inference_mode():\n    [m(x, t) for _ in range({reps})]\n"
        "print(time.perf_counter() - t0)")


def run(policy: str, competitor: bool, reps: int, threads: int) -> float:
    """Seconds of the workload in a fresh process with ``policy``; with a competitor process beside it."""
    env = {**os.environ, "OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": str(threads)}
    code = WORK.replace("{reps}", str(reps))
    rival = subprocess.Popen([sys.executable, "-c", code.replace(str(reps), str(reps * 3))], env=env,
                             stdout=subprocess.DEVNULL) if competitor else None
    if rival:
        time.sleep(2.0)                                       # its imports done, it is computing
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    if rival:
        rival.kill()
        rival.wait()
    return float(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=10, help="forward passes of 250 images (default 10)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads per process (default: cores)")
    p.add_argument("--out", help="also write the Markdown report here")
    a = p.parse_args()
    load = os.getloadavg()[0]
    rows = []
    for policy in ("ACTIVE", "PASSIVE"):
        alone = run(policy, False, a.reps, a.threads)
        shared = run(policy, True, a.reps, a.threads)
        rows.append((policy, alone, shared))
    lines = ["# Threads under load: OpenMP wait policy", "",
             f"`benchmarks/bench_threads.py`: {a.reps} U-Net forward passes of 250 images, {a.threads} threads per "
             f"process on {os.cpu_count()} cores, alone and beside a second process running the same work "
             f"(each setting in fresh processes; load average {load:.1f} at the start).", "",
             "| OMP_WAIT_POLICY | alone s | beside another job s | slow-down |", "|---|---:|---:|---:|"]
    lines += [f"| {pol} | {alone:.2f} | {shared:.2f} | {shared / alone:.1f}x |" for pol, alone, shared in rows]
    lines += ["", f"Passive waiting beside another job: {rows[0][2] / rows[1][2]:.1f}x faster than spinning."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        from qdm.checkpoint import write_text
        write_text(Path(a.out), text)


if __name__ == "__main__":
    main()
