"""How many BLAS / OpenMP threads one computation may use.

The server already runs requests concurrently (FastAPI's worker threads); if every fit also
spawns one native thread per core, a 2-core machine under load runs 10-25x slower
(scikit-learn fits measured by the cluster family's author). The cap is set once per process:

- environment variables (``OMP_NUM_THREADS``...) for native libraries not loaded yet; OpenMP
  reads them when it loads, and they are what new worker threads inherit, so
  ``quantcrew-server`` sets them before it imports any model code;
- ``threadpoolctl`` for the BLAS libraries already loaded (their pools are process-wide).

It is never changed per request: that would not be thread-safe.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["limit_compute_threads"]

_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_compute_threads(threads: int) -> Any:
    """Cap native compute threads at ``threads`` (0: leave the libraries' defaults).

    Returns:
        The ``threadpoolctl`` limiter (call ``restore_original_limits()`` to undo its part), or None.
    """
    if threads <= 0:
        return None
    for name in _ENV:
        os.environ.setdefault(name, str(threads))
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")
