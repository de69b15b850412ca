"""One grid runner for every table and study (``reproduce``, ``ablate``, ``curve``).

A grid is a list of cells still to run, a function that runs one cell (under the cell's lease,
qdm.locks: it returns None when another process or machine holds the cell) and a function that
records a finished cell in the grid's ledger. The cells run

- ``local``: in this process one after another, or in ``jobs`` worker processes at once;
- ``submitit``: one job each through submitit, on SLURM where there is one (else local processes);
- ``commands``: not at all here: one command line per cell is printed, for a SLURM array, xargs or
  any queue. Each command runs its one cell and records it in the shared ledger itself.

Every finished cell is recorded as soon as it finishes, so a grid stopped at any point resumes
where it stopped: the ledger and the run folders say what is done.
"""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from qdm.errors import UserError
from qdm.experiments.protocol import protocol_flags
from qdm.train import resolve_device

EXECUTORS = ("local", "submitit", "commands")
CELL_TIMEOUT_MIN = 240      # a submitit job's time limit unless given (submitit's own default is minutes)


def check_executor(executor: str, jobs: int = 1) -> None:
    if executor not in EXECUTORS:
        raise UserError(f"unknown --executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")


def runs_here(jobs: int, executor: str) -> bool:
    """Whether the cells run in this process, so that they may share its Inception network and device."""
    return jobs == 1 and executor == "local"


def grid_devices(asked: str, executor: str, jobs: int = 1) -> tuple:
    """(the device this process works on, the device its cells are given). Cells of the local
    executor run on this machine: the device asked for is resolved here, so a wrong one fails before
    any work (worker processes get its name). Cells of submitit jobs or printed commands may run
    elsewhere (GPU nodes, say): they get the name asked for, each resolves it where it runs, and this
    process uses it too, or the CPU where it lacks the GPU (a login node)."""
    if executor == "local":
        device = resolve_device(asked)
        return device, device if jobs == 1 else str(device)
    try:
        return resolve_device(asked), asked
    except UserError:
        if not str(asked).startswith("cuda"):
            raise                             # a misspelt device fails here, not in every job
        return resolve_device("cpu"), asked


def cell_flags(proto: dict, device, data_dir) -> str:
    """The flags every printed cell command ends with: the protocol, the device asked for, the data root."""
    return f"{protocol_flags(proto)} --device {device}" + (f" --data-dir {data_dir}" if data_dir else "")


def require_finished(cells, root: Path) -> None:
    """Refuse a grid of which no cell was finished (every one held by other processes)."""
    if not cells:
        raise UserError("no cell was finished: every cell is held by another process (see "
                        f"{Path(root) / 'locks'}; a lock is taken over once its lease runs out)")


def _init_worker(threads: int):
    torch.set_num_threads(threads)


def _local(tasks: list, work, jobs: int):
    """(task, result) as each finishes: in this process, or in ``jobs`` worker processes that share
    the cores (each with cores / jobs threads)."""
    if jobs == 1:
        for task in tasks:
            yield task, work(task)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(work, task): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _submitit(tasks: list, work, folder: Path, cluster: str | None, slurm: dict):
    """(task, result) as each submitit job finishes; ``cluster`` None: SLURM if present, else local."""
    import submitit
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        executor.update_parameters(**{"timeout_min": CELL_TIMEOUT_MIN, **slurm})
    except (ValueError, NameError, TypeError) as e:      # an unknown cluster or parameter
        raise UserError(f"submitit refused --cluster {cluster} / --submitit {slurm}: {' '.join(str(e).split())}; "
                        "see submitit's AutoExecutor for the names it takes") from None
    jobs = {}
    with executor.batch():
        for task in tasks:
            jobs[task] = executor.submit(work, task)
    by_id = {id(job): task for task, job in jobs.items()}
    for job in submitit.helpers.as_completed(list(jobs.values()), poll_frequency=1):
        yield by_id[id(job)], job.result()


def run_grid(tasks: list, work, record, *, jobs: int = 1, executor: str = "local", command=None,
             folder: Path | None = None, cluster: str | None = None, slurm: dict | None = None,
             label: str = "grid", progress: bool = True) -> list:
    """Run ``work(task)`` for every task and ``record(task, result)`` each result as it comes; return
    the tasks that another process held (skipped). ``work`` must pickle for jobs > 1 and submitit (a
    module-level function, or a functools.partial of one). ``command(task)``: the task's command line,
    for the commands executor."""
    check_executor(executor, jobs)
    if executor == "commands":
        for task in tasks:
            print(command(task), flush=True)
        return []
    if executor == "submitit":
        results = _submitit(tasks, work, Path(folder or "runs/submitit"), cluster, slurm or {})
    else:
        results = _local(tasks, work, jobs)
    if progress and tasks:
        print(f"[{label}] {len(tasks)} cells to run ({executor}, jobs {jobs})", flush=True)
    skipped = []
    for task, result in results:
        if result is None:
            skipped.append(task)
            print(f"[{label}] cell {task} is held by another process: skipped", flush=True)
            continue
        record(task, result)
    return skipped
