"""The Ray backend: a plan's slots as async Ray actors (docs/scale-out.md).

Needs the ``ray`` extra (``pip install 'flowstream[ray]'``); import it only
through `flowstream.runtime.backends` (``RunOptions(backend="ray")``).
"""

from __future__ import annotations

from .executor import RayBackendError, RayExecutor, ensure_ray

__all__ = ["RayBackendError", "RayExecutor", "ensure_ray"]
