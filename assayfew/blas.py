"""numpy's BLAS thread pool, held to one thread while torch works alongside it.

Prediction alternates small numpy products (ridge blend, Tanimoto similarities) with small torch ops. Both
libraries keep their own thread pool, and threads that spin-wait after a call take the cores the other pool
needs: on 2 cores, adapt + predict for 1,000 compounds took 0.95 s with both pools at 2 threads and 0.48 s
with numpy's held to one (benchmarks/predict.py). numpy's products here are small, so one thread loses nothing.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


def single_threaded_numpy_blas() -> AbstractContextManager:
    """Context manager: numpy's BLAS (OpenBLAS, MKL, ...) uses one thread inside; restored on exit."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
