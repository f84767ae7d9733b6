"""The typed memo of step-independent work on one input tensor during one adaptation.

Valid while the body parameters are unchanged and, for a query input, the support statistics are the same
(the learner guarantees both). Models fill and read it in `trace`; nothing else keys into it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from assayfew.meta.sparse import SparseRows

__all__ = ["Memo", "Moments"]

Moments = tuple[Tensor, Tensor]  # (mean, var), each broadcastable to (T, 1, H)


@dataclass
class Memo:
    """sparse_rows / input_nnz: the input's sparse form and non-zero count, when the batch has them memoised;
    linear[k]: block k's linear map (and transform) output; moments[k]: its support statistics;
    blocks[k]: block k's output and statistics on a step-independent prefix of blocks."""

    sparse_rows: Callable[[], SparseRows] | None = None
    input_nnz: Callable[[], int] | None = None
    linear: dict[int, Tensor] = field(default_factory=dict)
    moments: dict[int, Moments] = field(default_factory=dict)
    blocks: dict[int, tuple[Tensor, Moments]] = field(default_factory=dict)
