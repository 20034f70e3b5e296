"""Nexmark's queries as flowstream workflows (see README.md here).

``q*.yaml`` are the declarative forms (CEL expressions); `queries` builds the
same graphs in Python with Python callables. Both give the answers of
``benchmarks/nexmark/reference.py``.
"""
