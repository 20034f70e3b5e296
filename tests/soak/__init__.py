"""``make soak``: a seeded, bounded fault run (see `tests.soak.soak`).

``python -m tests.soak [--seed N] [--kills N] [--duration S]``; a short
variant runs in the test suite (``test_soak.py``).
"""
