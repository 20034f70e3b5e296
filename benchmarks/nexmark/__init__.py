"""Nexmark, the standard streaming benchmark, on flowstream.

* `generator`: seeded, reproducible events (persons, auctions, bids), in
  order or with a fraction of them delayed;
* `reference`: every query in plain Python, the answers to match;
* `check`: multiset comparison of records;
* `runner`: runs a query's workflow (examples/nexmark) on events;
* ``python -m benchmarks.nexmark``: ``gen``, ``run``, ``check`` and ``bench``
  (``make nexmark``).
"""
