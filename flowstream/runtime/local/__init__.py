"""The local executor: one process, one event loop (`WorkflowExecutor`).

Its internals (segments, stages, the DAG loop, the barrier driving) are
private to this package; everything outside uses the `Executor` protocol
(`flowstream.runtime.protocol`) and `flowstream.runtime.backends`.

* ``executor``: `WorkflowExecutor`: run attempts, building a plan's per-run
  objects, segment tasks, events;
* ``fusion``: the per-run node and segment objects, and composed kernels;
* ``stages``: what a segment's batches flow through (kernels, generators,
  calls);
* ``dag``: DAG runs over the plan's flat schedule;
* ``direct``: the direct one-shot calls of a graph that also has streams;
* ``epochs``: stream checkpoints' barriers through the segments;
* ``failures``: retry policies and error handling per call.
"""

from __future__ import annotations

from .executor import WorkflowExecutor as WorkflowExecutor

__all__ = ["WorkflowExecutor"]
