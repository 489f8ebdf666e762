"""The rule for index outputs (argmax, argmin): an index is right when the value it picks is the row's extremum
to within rounding.

Rounding decides near-ties: where a row's two largest values differ by less than the chain's rounding, both are
right answers, and PyTorch at the task's dtype may pick either. With ``x`` the float64 reference of the values the
arg reduction reads ([rows, N]) and ``x16`` the same values from PyTorch at the task's dtype, index ``i`` of row
``r`` passes an argmax when

    x[r, i] >= max_j x[r, j] - tol[r],    tol[r] = 2 max_j |x16[r, j] - x[r, j]| + INDEX_FLOOR max_j |x[r, j]|

(an argmin mirrored). PyTorch's own pick is off by at most its error at the pick plus its error at the
extremum, so the first term admits it; the floor admits fp32 kernels whose values differ from PyTorch's fp32 by a
few ulps. A 16-bit task's floor is no looser: a kernel working in fp32 is far inside it. Where no other value of a
row lies within ``tol[r]`` of its extremum, only the exact index passes.
"""

from __future__ import annotations

import torch

INDEX_FLOOR = 1e-5  # relative to the row's largest magnitude


def tolerance(values: torch.Tensor, own_values: torch.Tensor) -> torch.Tensor:
    """Per row of ``values`` ([..., N], float64), how far below its extremum a picked value may fall."""
    rows, own = values.reshape(-1, values.shape[-1]), own_values.reshape(-1, values.shape[-1]).double()
    return 2 * (own - rows).abs().amax(dim=1) + INDEX_FLOOR * rows.abs().amax(dim=1)


def _scores(values: torch.Tensor, largest: bool) -> torch.Tensor:
    """The rows as scores whose max is the right answer (an argmin's values negated)."""
    rows = values.reshape(-1, values.shape[-1])
    return rows if largest else -rows


def near_tie_fraction(values: torch.Tensor, own_values: torch.Tensor, largest: bool) -> float:
    """The fraction of rows with a second value within rounding of their extremum (two right answers)."""
    scores = _scores(values, largest)
    if scores.shape[1] < 2:
        return 0.0
    top = scores.topk(2, dim=1).values
    return float(((top[:, 0] - top[:, 1]) <= tolerance(values, own_values)).double().mean())


def judge(out: torch.Tensor, ref: torch.Tensor, values: torch.Tensor, own_values: torch.Tensor, largest: bool) -> dict:
    """Judge picked indices ``out`` ([rows] or [rows, 1], int64) by the rule; ``ref`` holds the reference's own
    picks (PyTorch's in float64), shown where a row fails. The stats use the checker's keys: ``rel_err`` is the
    fraction of rows off (tolerance 0), ``max_abs_err`` the worst row's shortfall below its extremum,
    ``max_abs_tolerance`` that row's bound; ``worst`` is the flat position of that row."""
    n = values.shape[-1]
    scores = _scores(values.to(out.device), largest)
    picked = out.reshape(-1)
    in_range = (picked >= 0) & (picked < n)
    got = scores.gather(1, picked.clamp(0, n - 1)[:, None])[:, 0]
    shortfall = torch.where(in_range, scores.amax(dim=1) - got, torch.full_like(got, float("inf")))
    tol = tolerance(values, own_values).to(out.device)
    off = shortfall > tol
    worst = int((shortfall - tol).argmax())
    return {"passed": not bool(off.any()), "kind": "mismatch", "rule": "index", "rel_err": float(off.double().mean()),
            "tolerance": 0.0, "max_abs_err": float(shortfall[worst]), "max_abs_tolerance": float(tol[worst]),
            "worst": worst, "value": float(picked[worst]), "expected": float(ref.reshape(-1)[worst]),
            "bad_fraction": float(off.double().mean())}
