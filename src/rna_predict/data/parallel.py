"""Process pool for the per-record data stages (``angles``, ``features``).

:func:`run_tasks` maps a module-level function over argument tuples and yields
``(index, result)`` as each task finishes, with a tqdm progress bar. The stages build
their outputs from the results keyed by record id (manifest written with sorted keys,
each ``.pt`` written by the worker with the same deterministic code), so the bytes do
not depend on the number of workers or on the order in which tasks finish.

``workers <= 1`` runs the tasks in this process, in order, without a pool. Otherwise a
:class:`concurrent.futures.ProcessPoolExecutor` is used with the ``forkserver`` start
method (``spawn`` where the platform has no forkserver): forking a process that has
already run torch/OpenMP code is unsafe, whereas the fork server is a fresh,
single-threaded process that imports the task's module once (``set_forkserver_preload``)
and forks a worker from that clean state. If the consumer stops early (an exception, a
KeyboardInterrupt), queued tasks are cancelled and the pool is shut down.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from .atomic import write_json

#: seconds between checkpoint writes of a stage manifest while tasks are running
CHECKPOINT_S = 10.0


def _context() -> multiprocessing.context.BaseContext:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def run_tasks(fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], workers: int,
              desc: str, unit: str) -> Iterator[tuple[int, Any]]:
    """Yield ``(k, fn(*tasks[k]))`` for every task, in completion order.

    ``fn`` must be a module-level function (it is pickled by reference) and its
    arguments and result picklable. ``workers`` is the number of processes; ``<= 1``
    computes in this process without starting a pool.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    with tqdm(total=len(tasks), desc=desc, unit=unit) as bar:
        if workers == 1 or len(tasks) <= 1:
            for k, args in enumerate(tasks):
                yield k, fn(*args)
                bar.update()
            return
        ctx = _context()
        if ctx.get_start_method() == "forkserver":
            ctx.set_forkserver_preload([fn.__module__])  # type: ignore[attr-defined]
        pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx)
        try:
            pending = {pool.submit(fn, *args): k for k, args in enumerate(tasks)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=pending.__getitem__):
                    k = pending.pop(fut)
                    yield k, fut.result()
                    bar.update()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class Checkpoint:
    """Rewrites a stage manifest atomically at most every ``every_s`` seconds.

    Lets an interrupted stage resume from the records finished so far without
    rewriting an ever-growing JSON file after every one of thousands of records.
    """

    def __init__(self, path: Path, every_s: float = CHECKPOINT_S) -> None:
        self.path = path
        self.every_s = every_s
        self._last = time.monotonic()

    def maybe_write(self, obj: Any) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self.write(obj)

    def write(self, obj: Any) -> None:
        write_json(self.path, obj)
        self._last = time.monotonic()


__all__ = ["CHECKPOINT_S", "Checkpoint", "run_tasks"]
