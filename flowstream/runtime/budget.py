"""A run's memory budget: the process's resident memory, read between batches.

What can be enforced in-process, and what cannot:

* Python has no per-run or per-node heap: the only cheap, honest figure is
  the process's resident set size (RSS, from ``/proc/self/statm``). A run's
  budget is how far RSS may grow above what it was when the run started.
  Runs sharing a process (a server's) share that figure: the run that finds
  it over its budget is stopped, whichever run allocated the memory.
* It is read between batches (at most every `CHECK_EVERY_S`), never inside
  a node's call: one call that allocates a lot at once is seen only after
  it returns, and one that never returns is never seen. A hard cap needs a
  process per run (an OS limit: ``ulimit -v``, a cgroup).
* WebAssembly nodes are limited exactly, by their memory pages.
* Where ``/proc`` does not exist, the budget cannot be read and is refused
  at the run's start rather than silently ignored.
"""

from __future__ import annotations

import os
import time

from ..errors import MemoryBudgetExceeded

__all__ = ["CHECK_EVERY_S", "MemoryBudget", "resident_bytes"]

CHECK_EVERY_S = 0.05
"""Reading RSS costs a file read: at most this often per run."""
_STATM = "/proc/self/statm"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """The process's resident set size in bytes.

    Raises:
        OSError: ``/proc/self/statm`` cannot be read (not Linux).
    """
    with open(_STATM, "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class MemoryBudget:
    """Stops a run whose process grew more than ``limit_mb`` since its start.

    Args:
        limit_mb: The workflow's ``memory_budget_mb``.

    Raises:
        MemoryBudgetExceeded: Resident memory cannot be read on this system.
    """

    __slots__ = ("base", "limit", "limit_mb", "next_at")

    def __init__(self, limit_mb: float) -> None:
        try:
            self.base = resident_bytes()
        except OSError as exc:
            msg = f"memory_budget_mb needs {_STATM} to read the memory in use: {exc}"
            raise MemoryBudgetExceeded(msg) from None
        self.limit_mb = limit_mb
        self.limit = int(limit_mb * 1024 * 1024)
        self.next_at = 0.0

    def check(self) -> None:
        """Between batches: raise if the process grew past the budget.

        Raises:
            MemoryBudgetExceeded: Names the budget and the growth.
        """
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + CHECK_EVERY_S
        grown = resident_bytes() - self.base
        if grown > self.limit:
            msg = (
                f"the run grew the process's memory by {grown / 1048576:.1f} MB, "
                f"over its memory_budget_mb={self.limit_mb:g}; the run was stopped"
            )
            raise MemoryBudgetExceeded(msg)
