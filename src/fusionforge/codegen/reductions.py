"""The math of every reduction and normalization, one record each, in the phases every plan composes.

A reduction's **state** is what a block of values reduces to (a sum; a max; the max and the sum of
exp(x - max) for logsumexp; count, mean and M2 for var; the max and the first index holding it for argmax),
each part with its identity. Its phases:

* ``block``: the state of one block of ``h`` (a row held in registers, a tile's rows, a matmul tile's rows);
* ``update``: fold one block of ``h`` into a running state (a row walked in slices, two_reductions' tiles):
  the online max with the rescaled sum for logsumexp, Chan's combination for var; values only the walk
  carries besides the state (``walk``, var's shift and offset) start at their identities with it;
* ``combine``: merge vectors of states, one per block, masked lanes holding the identity (a matmul's
  per-tile partials, two_reductions' per-slice states);
* ``finalize``: the state -> the reduced value ``h``.

A normalization names the reduction whose state it needs (``statistic``), how that state becomes per-row
constants (``finalize``) and how each value is then normalized (``apply``): the two passes of a row walked in
slices. A row held in registers takes ``block``, ``finalize`` and ``apply`` in turn, unless the record spells
a one-pass form that reuses what the block computed (``registers``: softmax's numerator, layer norm's
centered values).

Templates are Python format strings: ``{mask}`` the block's mask, ``{axis}`` the axis it reduces,
``{bcast}`` what broadcasts a per-row value over its block ("" or "[:, None]"), ``{n}`` the row length (the
values the reduction spans), ``{start}`` the first column of a slice (an index's offset), ``{<part>}`` a state
part's variable, and the step's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionforge.ops import FP8_MAX


@dataclass(frozen=True)
class Reduction:
    name: str
    state: tuple[tuple[str, str], ...]  # (part, identity)
    what: str  # the state in words, for comments
    block: tuple[str, ...]
    update: tuple[str, ...]
    combine: tuple[str, ...]
    finalize: tuple[str, ...]
    walk: tuple[tuple[str, str], ...] = ()  # (value, identity): carried by ``update`` only, never combined


@dataclass(frozen=True)
class Normalization:
    name: str
    statistic: str | None  # the Reduction whose state it needs (None: batch norm, per channel; a tensor's scale)
    finalize: tuple[str, ...]
    apply: str
    registers: tuple[str, ...] | None = None  # the one-pass form over a row in registers, where it differs
    keeps: tuple[str, ...] = ()  # what a row stores besides its values, once its constants are known (fp8 scales)


def _sum_like(name: str, part: str, what: str, value: str, result: str) -> Reduction:
    """A reduction whose state is one running sum of ``value`` (a template in h)."""
    summed = f"tl.sum(tl.where({{mask}}, {value}, 0.0), axis={{axis}})"
    return Reduction(name, ((part, "0.0"),), what, (f"{{{part}}} = {summed}",), (f"{{{part}}} += {summed}",),
                     (f"{{{part}}} = tl.sum({{{part}}}, axis=0)",), (f"h = {result}",))


def _extremum(name: str, fn: str, identity: str) -> Reduction:
    reduced = f"tl.{fn}(tl.where({{mask}}, h, {identity}), axis={{axis}})"
    return Reduction(name, ((fn, identity),), f"the row's {fn}", (f"{{{fn}}} = {reduced}",),
                     (f"{{{fn}}} = tl.{fn}imum({{{fn}}}, {reduced})",), (f"{{{fn}}} = tl.{fn}({{{fn}}}, axis=0)",),
                     (f"h = {{{fn}}}",))


def _arg_extremum(name: str, fn: str, identity: str, beats: str) -> Reduction:
    """argmax / argmin: the extremum and the first index holding it. A later slice's index replaces the running one
    only where its value strictly ``beats`` the running extremum, so a tie keeps the earlier index (as PyTorch)."""
    masked = f"tl.where({{mask}}, h, {identity})"
    return Reduction(
        name, ((fn, identity), ("index", "0")), f"the row's {fn} and the first index holding it",
        block=(f"{{{fn}}}, {{index}} = tl.{fn}({masked}, axis={{axis}}, return_indices=True)",),
        update=(f"block_{fn}, block_index = tl.{fn}({masked}, axis={{axis}}, return_indices=True)",
                f"{{index}} = tl.where(block_{fn} {beats} {{{fn}}}, {{start}} + block_index, {{index}})",
                f"{{{fn}}} = tl.{fn}imum({{{fn}}}, block_{fn})"),
        combine=(f"best = tl.{fn}({{{fn}}}, axis=0)",
                 f"{{index}} = tl.min(tl.where({{{fn}}} == best, {{index}}, 2**31 - 1), axis=0)",
                 f"{{{fn}}} = best"),
        finalize=("h = {index}",))


REDUCTIONS = {r.name: r for r in [
    _sum_like("sum", "sum", "the row's sum", "h", "{sum}"),
    _sum_like("mean", "sum", "the row's sum", "h", "{sum} / {n}"),
    _sum_like("l2norm", "sumsq", "the row's sum of squares", "h * h", "tl.sqrt({sumsq})"),
    _extremum("max", "max", "float('-inf')"),
    _extremum("min", "min", "float('inf')"),
    Reduction(
        "logsumexp", (("max", "float('-inf')"), ("sumexp", "0.0")),
        "the row's max and sum of exp(x - max) (rescaled as the max grows)",
        block=("{max} = tl.max(tl.where({mask}, h, float('-inf')), axis={axis})",
               "{sumexp} = tl.sum(tl.where({mask}, tl.exp(h - {max}{bcast}), 0.0), axis={axis})"),
        update=("new_max = tl.maximum({max}, tl.max(tl.where({mask}, h, float('-inf')), axis={axis}))",
                "{sumexp} = {sumexp} * tl.exp({max} - new_max) + "
                "tl.sum(tl.where({mask}, tl.exp(h - new_max), 0.0), axis={axis})",
                "{max} = new_max"),
        combine=("new_max = tl.max({max}, axis=0)",
                 "{sumexp} = tl.sum({sumexp} * tl.exp({max} - new_max), axis=0)",
                 "{max} = new_max"),
        finalize=("h = {max} + tl.log({sumexp})",)),
    Reduction(
        "var", (("count", "0.0"), ("mean", "0.0"), ("m2", "0.0")),
        "the row's count, mean and M2 (Chan's combination)",
        block=("{count} = tl.sum({mask}.to(tl.float32), axis={axis})",
               "{mean} = tl.sum(tl.where({mask}, h, 0.0), axis={axis}) / {count_or_1}",
               "centered = tl.where({mask}, h - {mean}{bcast}, 0.0)",
               "{m2} = tl.sum(centered * centered, axis={axis})"),
        # the running mean is carried as an offset from the first block's mean (the shift): rounding an
        # offset of the spread's size at every block, not a mean far from zero, keeps a long row's mean accurate
        update=("block_count = tl.sum({mask}.to(tl.float32), axis={axis})",
                "block_mean = tl.sum(tl.where({mask}, h, 0.0), axis={axis}) / block_count",
                "block_m2 = tl.sum(tl.where({mask}, (h - block_mean) * (h - block_mean), 0.0), axis={axis})",
                "{shift} = tl.where({count} == 0, block_mean, {shift})",
                "delta = (block_mean - {shift}) - {offset}",
                "{offset} += delta * block_count / ({count} + block_count)",
                "{m2} += block_m2 + delta * delta * {count} * block_count / ({count} + block_count)",
                "{count} += block_count",
                "{mean} = {shift} + {offset}"),
        combine=("# Chan: M2 = the blocks' M2 + sum of count * (block mean - mean)^2",
                 "total_mean = tl.sum({count} * {mean}, axis=0) / {n}",
                 "spread = {mean} - total_mean",
                 "{m2} = tl.sum({m2}, axis=0) + tl.sum({count} * spread * spread, axis=0)"),
        finalize=("h = {m2} / ({n} - {correction})",),
        walk=(("shift", "0.0"), ("offset", "0.0"))),
    Reduction("amax", (("amax", "0.0"),), "the row's largest magnitude",
              block=("{amax} = tl.max(tl.where({mask}, tl.abs(h), 0.0), axis={axis})",),
              update=("{amax} = tl.maximum({amax}, tl.max(tl.where({mask}, tl.abs(h), 0.0), axis={axis}))",),
              combine=("{amax} = tl.max({amax}, axis=0)",), finalize=("h = {amax}",)),
    _arg_extremum("argmax", "max", "float('-inf')", ">"),
    _arg_extremum("argmin", "min", "float('inf')", "<"),
]}
# A spatial reduction's row is a [B, C, H, W] value's plane of H x W values, contiguous: the same math.
REDUCTIONS["spatial_mean"], REDUCTIONS["spatial_max"] = REDUCTIONS["mean"], REDUCTIONS["max"]

QUANTIZE = f"h = tl.clamp(h / scale, -{FP8_MAX}, {FP8_MAX})"

_STANDARDIZE = Normalization(
    "standardize", "var", ("rstd = tl.rsqrt({m2} / {n} + {eps})",), "h = (h - {mean}) * rstd * gamma + beta",
    registers=("{mean} = tl.sum(tl.where(mask, h, 0.0), axis=0) / {n}",
               "centered = tl.where(mask, h - {mean}, 0.0)",
               "# the rounding of the mean, taken back: what the centered values still sum to (corrected two-pass)",
               "centered = tl.where(mask, centered - tl.sum(centered, axis=0) / {n}, 0.0)",
               "h = centered * tl.rsqrt(tl.sum(centered * centered, axis=0) / {n} + {eps})",
               "h = h * gamma + beta"))

NORMALIZATIONS = {
    "softmax": Normalization(
        "softmax", "logsumexp", (), "h = tl.exp(h - {max}) / {sumexp}",
        registers=("{max} = tl.max(tl.where(mask, h, float('-inf')), axis=0)",
                   "numerator = tl.where(mask, tl.exp(h - {max}), 0.0)",
                   "h = numerator / tl.sum(numerator, axis=0)")),
    "log_softmax": Normalization(
        "log_softmax", "logsumexp", ("log_sum = {max} + tl.log({sumexp})",), "h = h - log_sum",
        registers=("{max} = tl.max(tl.where(mask, h, float('-inf')), axis=0)",
                   "h = h - {max} - tl.log(tl.sum(tl.where(mask, tl.exp(h - {max}), 0.0), axis=0))")),
    "layer_norm": _STANDARDIZE,
    "group_norm": _STANDARDIZE,
    "instance_norm": _STANDARDIZE,
    "rms_norm": Normalization("rms_norm", "l2norm", ("rstd = tl.rsqrt({sumsq} / {n} + {eps})",),
                              "h = h * rstd * gamma"),
    "l2_normalize": Normalization("l2_normalize", "l2norm", ("norm = tl.maximum(tl.sqrt({sumsq}), {eps})",),
                                  "h = h / norm"),
    "batch_norm": Normalization("batch_norm", None, (),
                                "h = (h - running_mean) * tl.rsqrt(running_var + {eps}) * gamma + beta"),
    # fp8 e4m3: h / scale rounded to nearest on the cast, saturated at the largest finite value
    "quantize_fp8_rows": Normalization("quantize_fp8_rows", "amax",
                                       (f"scale = tl.maximum({{amax}}, 1e-12) / {FP8_MAX}",), QUANTIZE,
                                       keeps=("tl.store(scales_ptr + row, scale)",)),
    # the tensor's amax: every row's, folded in by a first kernel's atomic max
    "quantize_fp8_tensor": Normalization("quantize_fp8_tensor", None,
                                         (f"scale = tl.maximum(tl.load(amax_ptr), 1e-12) / {FP8_MAX}",), QUANTIZE,
                                         keeps=("if row == 0:", "    tl.store(scales_ptr, scale)")),
}


class Phrases:
    """A reduction's templates filled for one context: its state's variables (``prefix`` + part, or a value
    the context already knows, as a whole row's count), mask, axis, broadcast, row length and parameters."""

    def __init__(self, reduction: Reduction, prefix: str, params: dict, mask: str = "mask", axis: object = 0,
                 bcast: str = "", n: str = "row_len", known: dict[str, str] | None = None,
                 start: str = "start") -> None:
        parts = [part for part, _ in reduction.state]
        self.reduction, self.known = reduction, {k: v for k, v in (known or {}).items() if k in parts}
        self.names = {part: self.known.get(part, prefix + part) for part, _ in reduction.state + reduction.walk}
        count = self.names.get("count", "")
        self.fields = {**params, **self.names, "mask": mask, "axis": axis, "bcast": bcast, "n": n, "start": start,
                       "count_or_1": count if "count" in self.known else f"tl.maximum({count}, 1.0)"}

    def __call__(self, templates) -> list[str]:
        """``templates`` filled; in a block, no statement for a part the context knows."""
        known = {self.names[part] for part in self.known}
        lines = [t.format(**self.fields) for t in templates]
        return [line for line in lines if line.split(" = ", 1)[0] not in known]

    def init(self) -> list[str]:
        """The running state, and what the walk carries besides it, at their identities."""
        return [f"{self.names[part]} = {identity}" for part, identity in self.reduction.state + self.reduction.walk]

    @property
    def parts(self) -> list[tuple[str, str]]:
        """(variable, identity) of each part."""
        return [(self.names[part], identity) for part, identity in self.reduction.state]
