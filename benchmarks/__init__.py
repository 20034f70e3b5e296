"""flowstream's benchmark suite: ``make bench`` or ``python -m benchmarks``.

Every workload is timed in the same run as its floor (a bare synchronous Python
generator chain doing the same work) and as the same workload in aiostream,
streamz, reactivex, bytewax (and dask for the DAG), so every figure is a ratio.
Each ``bench_*`` module also runs alone: ``python -m benchmarks.bench_linear``.
"""
