"""numpy's BLAS pool is held to one thread inside the context and restored after."""

import numpy  # noqa: F401  (loads its BLAS library)
import pytest
from threadpoolctl import threadpool_info

from assayfew.blas import single_threaded_numpy_blas


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_single_threaded_numpy_blas_limits_and_restores():
    before = _blas_threads()
    if not before:
        pytest.skip("numpy has no BLAS library threadpoolctl can control here")
    with single_threaded_numpy_blas():
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before
