"""The built-in implementer: renders a complete kernel file for a task from the op catalog.

A plan is chosen from the chain's shape; each plan writes one named Triton kernel with fp32 math
and one cast on store, and a wrapper that only allocates, makes inputs contiguous and launches.
Plans so far:

* pointwise: every op is unary or binary (easy tasks). One blocked kernel over the flattened
  output, a full tensor operand read at the same ``offset``, a scalar a kernel argument; 1024
  elements per program over 4 warps gives each thread 8 contiguous elements (16-byte fp16 / 32-byte
  fp32 accesses). A chain with a per-column or per-row vector runs over [rows, N] in [2, 1024] tiles
  instead, numbered row by row: each vector is loaded once per tile and broadcast (read at
  ``offset % N`` or ``offset // N``, it would cost an integer division per element).

* row: pointwise ops, one reduction or normalization, pointwise ops (medium tasks). One program
  per row of the reduced or normalized dimension, the row held in registers (BLOCK_N lanes, the
  next power of two, masked; 1 to 16 warps as the row grows, autotuned where none wins everywhere);
  pointwise ops before and after are fused, operands indexed per lane or once per program; a
  reduction's row loads are marked evict_first (read once, kept nowhere), and a reduction over rows
  under 2 KB reads several rows per program ([ROWS, BLOCK_N] tiles of 2048 values). Group norm's
  rows are one group of one sample. Rows longer than MAX_ROW_BLOCK are walked in slices (a 3D group
  norm's in tiles of channels and positions): one pass for a reduction, two for a normalization
  (statistics, then normalize and store).

* matmul: the pointwise epilogue fused (inference batch norm included: it is per channel). A
  reduction after it never stores the [M, N] product: each tile writes its rows' fp32 partial
  statistics and a combine kernel merges them; a normalization after it runs as a second kernel of
  the row plan over the output. Variants (``variants``): 16-bit roots first ``persistent`` (one
  program per SM walks the output tiles of every batch, TMA descriptor loads, the tile loop marked
  for warp specialization), then ``tiled`` (a tl.dot tile per program, grouped tile order,
  autotuned over Hopper-sized tiles); float32 first ``tf32x3`` (tiled, three-pass TF32 dots), then
  ``tiled`` with IEEE dots. fp32 accumulation throughout.
* two_reductions: [B, M, N] reduced over N, then over M (hard tasks): a program per tile of
  TWO_REDUCTION_TILE values (BLOCK_M rows of one batch; past TWO_REDUCTION_MAX_SPLITS tiles a batch, a
  program walks several) reduces its rows, applies the middle ops and stores the second reduction's
  fp32 state; a combine kernel merges each batch's states (the matmul partials' rules) and applies the
  later ops.

Ops are written in their catalog Triton form; float16 and bfloat16 tasks take an op's cheaper 16-bit
form where the catalog has one (gelu: a Chebyshev erfc fit instead of libdevice erf; sin and cos: a
Cody-Waite reduction and polynomials instead of libdevice sinf and cosf). Other chains
(a normalization among several reductions, forced by hand) raise UnsupportedTask naming the missing
plan. Generation is deterministic: the same task gives the same file.
"""

from __future__ import annotations

import pprint
import re
from dataclasses import dataclass, replace

from fusionforge import ops as catalog
from fusionforge.kernelfile import render
from fusionforge.ops import Family
from fusionforge.tasks import ITEMSIZE, SCALAR_DTYPE, FusionTask, InputSpec, Step, step_label

POINTWISE_BLOCK = 1024
POINTWISE_WARPS = 4
# Chains with vectors: [2, 1024] tiles, 16 values a thread. A/B on the H100 over the 26 such seeds of 0..199
# and bias_gelu_scale: 2.3% faster than [8, 512] in geometric mean, 0.97x to 1.12x
# (benchmarks/results/ab_h100/round3_tiles.txt). The tiles run in row-major order (one grid dimension): where
# a row spans several tiles, programs that run together then read neighbouring memory, not the same columns
# of far-apart rows. A/B over the 51 such seeds of 0..539: 1.031x, 89-90% -> 93-94% of the floor where
# memory-bound, 0.96x-0.98x on five compute-bound chains (round9_pointwise_tile_order.txt).
POINTWISE_TILE, POINTWISE_TILE_N = 2048, 1024
MAX_ROW_BLOCK = 16384  # a row held in registers; longer rows take the looped variant (_LOOPED)


class UnsupportedTask(ValueError):
    """The built-in code generator has no plan for this chain yet."""


def plan_of(task: FusionTask) -> str:
    families = [catalog.get(s.op).family for s in task.steps]
    if set(families) <= {Family.UNARY, Family.BINARY}:
        return "pointwise"
    rows = [f for f in families if f in (Family.REDUCTION, Family.NORM)]
    if families[0] is Family.MATMUL:  # its epilogue holds batch norm; at most one other row op follows
        if len([s for s in task.steps if catalog.get(s.op).family in (Family.REDUCTION, Family.NORM)
                and s.op != "batch_norm"]) <= 1:
            return "matmul"
    elif len(rows) == 1:
        return "row"
    if rows == [Family.REDUCTION, Family.REDUCTION] and Family.MATMUL not in families:
        return "two_reductions"
    raise UnsupportedTask(f"the built-in code generator has no plan yet for chains with several normalizations "
                          f"or reductions beyond two (task {task.id}: {task.description})")


def variants(task: FusionTask) -> list[str]:
    """The kernel variants the generator can write for ``task``, the default first.

    Matmul roots have two. 16-bit linear, matmul and batched matmul: ``persistent`` (one program per SM
    walking the output tiles of every batch, TMA descriptor loads, the tile loop marked for warp
    specialization), then ``tiled``.
    float32: ``tf32x3`` (the tiled kernel with tl.dot's three-pass TF32: tensor cores, each operand
    split into a high and a low TF32 part, the low-by-low product dropped: about 2^-22 relative
    error per product, within float32's rule), then ``tiled`` (IEEE fp32 FMA dots).
    """
    if plan_of(task) == "matmul":
        if task.dtype == "float32":
            return ["tf32x3", "tiled"]
        return ["persistent", "tiled"]
    return ["tiled"]


def variant_of(source: str) -> str:
    """Which variant a generated file holds (its TRITON section names it)."""
    if PERSISTENT_MARK in source:
        return "persistent"
    return "tf32x3" if _DOT["tf32x3"] in source else "tiled"


def generate(task: FusionTask, attempt: int = 1, variant: str | None = None) -> str:
    """The complete kernel file (seed format) implementing ``task``; ``variant`` defaults to the first."""
    plan = plan_of(task)
    variant = variant or variants(task)[0]
    if variant not in variants(task):
        raise UnsupportedTask(f"no {variant!r} variant of the {plan} plan for task {task.id}")
    python = python_section(task)
    if plan == "matmul":
        triton_section = _matmul(task, variant)
    else:
        triton_section = {"pointwise": _pointwise, "row": _row, "two_reductions": _two_reductions}[plan](task)
    helpers = dict.fromkeys(name for step in task.steps
                            for name in catalog.helpers_of(catalog.get(step.op), task.dtype))
    if helpers:  # jit helpers the kernels call, defined before the wrapper
        wrapper = "def fused_kernel_triton_wrapper("
        code = "\n\n".join(catalog.TRITON_HELPERS[name] for name in helpers)
        triton_section = triton_section.replace(wrapper, code + "\n\n" + wrapper, 1)
    return render(task.description, python, triton_section, _get_inputs(task), attempt)


def python_section(task: FusionTask) -> str:
    """The PYTHON section every implementer keeps as is: the TASK literal and the PyTorch function."""
    return "TASK = " + pprint.pformat(task.to_dict(), width=110, sort_dicts=False) + "\n\n\n" + task.pytorch_source()


@dataclass
class Layout:
    """Where operands live relative to the values a kernel holds.

    ``index`` maps an operand layout (col, row, full, chan) to its index expression; layouts in
    ``per_program`` are one value per program (loaded without a mask), the others one per lane.
    """

    index: dict[str, str]
    per_program: frozenset = frozenset()
    mask: str = "mask"
    vectors: dict[str, tuple[str, str, str]] | None = None  # layout -> (1-D index, its mask, broadcast)

    def load(self, name: str, layout: str, other: str = "0.0", var: str | None = None) -> str:
        """``var = tl.load(name_ptr + index ...)`` in fp32; ``var`` defaults to the input's name."""
        var = var or name
        if self.vectors and layout in self.vectors:  # load a vector once per tile, then broadcast it
            index, mask, broadcast = self.vectors[layout]
            return f"{var} = tl.load({name}_ptr + {index}, mask={mask}, other={other}).to(tl.float32){broadcast}"
        index = self.index[layout]
        if layout in self.per_program:
            return f"{var} = tl.load({name}_ptr + {index}).to(tl.float32)"
        return f"{var} = tl.load({name}_ptr + {index}, mask={self.mask}, other={other}).to(tl.float32)"


def _emit_pointwise(k: int, step: Step, by_name: dict[str, InputSpec], layout: Layout, dtype: str) -> list[str]:
    """Load a binary op's operand (if a tensor) and apply one unary/binary op to h, in fp32, in the op's
    Triton form for a task of ``dtype``."""
    op = catalog.get(step.op)
    params = {name: value for name, value in step.params.items() if name != "operand"}
    lines, names = [], {}
    if op.family is Family.BINARY:
        spec = by_name[step.inputs[0]]
        if spec.dtype != SCALAR_DTYPE:
            # masked lanes are never stored; 1.0 keeps a divisor's dead lanes finite all the same
            lines.append(layout.load(spec.name, step.params["operand"], "1.0" if op.name == "div" else "0.0"))
        names = {"y": spec.name}
    lines.append(f"# {k}. {step_label(step)}: {op.doc}")
    lines.append("h = " + op.triton_form(dtype).format(x="h", **params, **names))
    return lines


def _wrap(opening: str, items: list[str], closing: str, width: int = 120) -> list[str]:
    """``opening`` + items separated by commas + ``closing``, broken into lines of at most ``width``
    (when the items allow), continuation lines aligned after the opening parenthesis."""
    lines, line = [], opening
    for k, item in enumerate(items):
        piece = item + (closing if k == len(items) - 1 else ",")
        if line != opening and len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = " " * len(opening) + piece
        else:
            line += ("" if line == opening else " ") + piece
    return lines + [line]


def _kernel_def(name: str, params: list[str], constexprs: list[str]) -> list[str]:
    """``def name(params, constexprs: tl.constexpr):``, wrapped."""
    return _wrap(f"def {name}(", [*params, *(f"{c}: tl.constexpr" for c in constexprs)], "):")


def _launch(callee: str, args: list[str]) -> list[str]:
    """A wrapper line calling ``callee(args)`` (a kernel launch), wrapped."""
    return _wrap(f"    {callee}(", args, ")")


def _kernel_args(task: FusionTask) -> list[str]:
    return ["x_ptr"] + [f"{i.name}_ptr" if i.dtype != SCALAR_DTYPE else i.name for i in task.inputs[1:]]


def _contiguous(task: FusionTask) -> list[str]:
    return [f"    {i.name} = {i.name}.contiguous()" for i in task.inputs if i.dtype != SCALAR_DTYPE]


def _read_sizes(body: list[str], sizes: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The size parameters ``body`` reads and their wrapper arguments, from (parameter, argument) pairs:
    a kernel takes no size it does not use (a name only in a comment is not a use)."""
    code = "\n".join(line.split("#", 1)[0] for line in body)
    read = [(param, arg) for param, arg in sizes if re.search(rf"\b{param}\b", code)]
    return [param for param, _ in read], [arg for _, arg in read]


def _pointwise(task: FusionTask) -> str:
    if any(step.params.get("operand") in ("col", "row") for step in task.steps):
        return _pointwise_tiles(task)
    body = _pointwise_body(task, Layout({"full": "offsets"}))
    shape = ", ".join(str(d) for d in task.inputs[0].shape)
    doc = (f'"""{" -> ".join(step_label(s) for s in task.steps)}, elementwise over x [{shape}] flattened.\n\n'
           f'    Tensor operands are read at the same offsets, scalars are arguments; fp32 math, one cast on '
           f'store.\n    """')
    kernel = "\n".join([
        "@triton.jit",
        *_kernel_def("fused_kernel_triton", [*_kernel_args(task), "out_ptr", "n_elements"], ["BLOCK_SIZE"]),
        f"    {doc}",
        "    pid = tl.program_id(0)",
        "    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)",
        "    mask = offsets < n_elements",
        *("    " + line for line in body),
    ])
    launch_args = ["x", *[i.name for i in task.inputs[1:]], "out", "n_elements",
                   f"BLOCK_SIZE={POINTWISE_BLOCK}", f"num_warps={POINTWISE_WARPS}"]
    wrapper = "\n".join([
        f"def fused_kernel_triton_wrapper({', '.join(task.arg_names)}):",
        *_contiguous(task),
        "    out = torch.empty_like(x)",
        "    n_elements = out.numel()",
        f"    grid = (triton.cdiv(n_elements, {POINTWISE_BLOCK}),)",
        *_launch("fused_kernel_triton[grid]", launch_args),
        "    return out",
    ])
    return kernel + "\n\n\n" + wrapper + "\n"


def _pointwise_body(task: FusionTask, layout: Layout) -> list[str]:
    """Load x at ``offsets``, apply the chain in fp32 (operands placed by ``layout``), store once."""
    by_name = {i.name: i for i in task.inputs}
    body = ["h = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)"]
    for k, step in enumerate(task.steps, start=1):
        body += _emit_pointwise(k, step, by_name, layout, task.dtype)
    return body + ["tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)"]


def _pointwise_tiles(task: FusionTask) -> str:
    """The pointwise plan over [rows, N] tiles, for chains with a per-column or per-row vector: each vector
    is loaded once per tile and broadcast, where the flat kernel pays an integer division per element."""
    body = _pointwise_body(task, Layout({"full": "offsets"}, vectors={"col": ("cols", "col_mask", "[None, :]"),
                                                                      "row": ("rows", "row_mask", "[:, None]")}))
    shape = ", ".join(str(d) for d in task.inputs[0].shape)
    doc = (f'"""{" -> ".join(step_label(s) for s in task.steps)}, elementwise over x [{shape}] as [rows, N], '
           f'in [BLOCK_M, BLOCK_N] tiles.\n\n    Per-column vectors are loaded once per tile ([BLOCK_N], broadcast '
           f'down the rows), per-row vectors [BLOCK_M]\n    across the columns; fp32 math, one cast on store.\n    """')
    kernel = "\n".join([
        "@triton.jit",
        *_kernel_def("fused_kernel_triton", [*_kernel_args(task), "out_ptr", "n_rows", "n_cols"],
                     ["BLOCK_M", "BLOCK_N"]),
        f"    {doc}",
        "    # tiles in row-major order: neighbouring programs read neighbouring memory",
        "    tiles_n = tl.cdiv(n_cols, BLOCK_N)",
        "    rows = (tl.program_id(0) // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)",
        "    cols = (tl.program_id(0) % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)",
        "    row_mask = rows < n_rows",
        "    col_mask = cols < n_cols",
        "    mask = row_mask[:, None] & col_mask[None, :]",
        "    offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]",
        *("    " + line for line in body),
    ])
    launch_args = ["x", *[i.name for i in task.inputs[1:]], "out", "n_rows", "n_cols", "BLOCK_M=BLOCK_M",
                   "BLOCK_N=BLOCK_N", f"num_warps={POINTWISE_WARPS}"]
    wrapper = "\n".join([
        f"def fused_kernel_triton_wrapper({', '.join(task.arg_names)}):",
        *_contiguous(task),
        "    out = torch.empty_like(x)",
        "    n_cols = x.shape[-1]",
        "    n_rows = x.numel() // n_cols",
        f"    BLOCK_N = min({POINTWISE_TILE_N}, triton.next_power_of_2(n_cols))",
        f"    BLOCK_M = {POINTWISE_TILE} // BLOCK_N",
        "    grid = (triton.cdiv(n_rows, BLOCK_M) * triton.cdiv(n_cols, BLOCK_N),)",
        *_launch("fused_kernel_triton[grid]", launch_args),
        "    return out",
    ])
    return kernel + "\n\n\n" + wrapper + "\n"


# -- row plan ----------------------------------------------------------------------------------------
# One program per row of the reduced or normalized dimension, the row held in registers
# (BLOCK_N = next power of two of the row length, masked). Group norm's rows are one group of one
# sample: [M, N] -> M * G rows of N / G; [B, M, N] -> B * G rows of (M / G) * N (contiguous in memory).

# A reduction's statements into h, over one row (axis 0 of [BLOCK_N]) or over each row of a tile (axis 1 of
# [rows, BLOCK_N]); {per_row} broadcasts a per-row value back over its lanes ("[:, None]" in a tile), {n} is
# the row length's name.
_REDUCTIONS = {
    "sum": ["h = tl.sum(tl.where(mask, h, 0.0), axis={axis})"],
    "mean": ["h = tl.sum(tl.where(mask, h, 0.0), axis={axis}) / {n}"],
    "max": ["h = tl.max(tl.where(mask, h, float('-inf')), axis={axis})"],
    "min": ["h = tl.min(tl.where(mask, h, float('inf')), axis={axis})"],
    "logsumexp": ["row_max = tl.max(tl.where(mask, h, float('-inf')), axis={axis})",
                  "h = row_max + tl.log(tl.sum(tl.where(mask, tl.exp(h - row_max{per_row}), 0.0), axis={axis}))"],
    "l2norm": ["h = tl.sqrt(tl.sum(tl.where(mask, h * h, 0.0), axis={axis}))"],
    "var": ["mean = tl.sum(tl.where(mask, h, 0.0), axis={axis}) / {n}",
            "centered = tl.where(mask, h - mean{per_row}, 0.0)",
            "h = tl.sum(centered * centered, axis={axis}) / ({n} - {correction})"],
}


def _reduction(step: Step, n: str, tile: bool) -> list[str]:
    """``step``'s reduction statements over a row of length ``n`` (``tile``: over each row of a tile)."""
    return [line.format(axis=1 if tile else 0, per_row="[:, None]" if tile else "", n=n, **step.params)
            for line in _REDUCTIONS[step.op]]


# A reduction's running state over several vectors of its values (a looped row's slices, the tiles of
# two_reductions' rows): an online max and rescaled sum for logsumexp, Chan's combination of (count, mean,
# M2) for var.
_RUNNING = {  # (initial accumulators, update from h under {mask} (summed over {axis}), the state as _PARTIALS' parts)
    "sum": (["total = 0.0"], ["total += tl.sum(tl.where({mask}, h, 0.0), axis={axis})"], {"part_sum": "total"}),
    "mean": (["total = 0.0"], ["total += tl.sum(tl.where({mask}, h, 0.0), axis={axis})"], {"part_sum": "total"}),
    "max": (["best = float('-inf')"],
            ["best = tl.maximum(best, tl.max(tl.where({mask}, h, float('-inf')), axis={axis}))"], {"part_max": "best"}),
    "min": (["best = float('inf')"],
            ["best = tl.minimum(best, tl.min(tl.where({mask}, h, float('inf')), axis={axis}))"], {"part_min": "best"}),
    "logsumexp": (["run_max = float('-inf')", "run_sum = 0.0"],
                  ["new_max = tl.maximum(run_max, tl.max(tl.where({mask}, h, float('-inf')), axis={axis}))",
                   "run_sum = run_sum * tl.exp(run_max - new_max) + "
                   "tl.sum(tl.where({mask}, tl.exp(h - new_max), 0.0), axis={axis})",
                   "run_max = new_max"],
                  {"part_max": "run_max", "part_sumexp": "run_sum"}),
    "l2norm": (["total = 0.0"], ["total += tl.sum(tl.where({mask}, h * h, 0.0), axis={axis})"], {"part_sq": "total"}),
    "var": (["count = 0.0", "run_mean = 0.0", "run_m2 = 0.0"],
            ["tile_count = tl.sum({mask}.to(tl.float32), axis={axis})",
             "tile_mean = tl.sum(tl.where({mask}, h, 0.0), axis={axis}) / tile_count",
             "tile_m2 = tl.sum(tl.where({mask}, (h - tile_mean) * (h - tile_mean), 0.0), axis={axis})",
             "delta = tile_mean - run_mean",
             "run_mean += delta * tile_count / (count + tile_count)",
             "run_m2 += tile_m2 + delta * delta * count * tile_count / (count + tile_count)",
             "count += tile_count"],
            {"part_count": "count", "part_mean": "run_mean", "part_m2": "run_m2"}),
}


_STATS = {  # statements normalizing h over its row (norms, softmax; batch norm per channel)
    "softmax": ["row_max = tl.max(tl.where(mask, h, float('-inf')), axis=0)",
                "numerator = tl.where(mask, tl.exp(h - row_max), 0.0)",
                "h = numerator / tl.sum(numerator, axis=0)"],
    "log_softmax": ["row_max = tl.max(tl.where(mask, h, float('-inf')), axis=0)",
                    "h = h - row_max - tl.log(tl.sum(tl.where(mask, tl.exp(h - row_max), 0.0), axis=0))"],
    "standardize": ["mean = tl.sum(tl.where(mask, h, 0.0), axis=0) / row_len",
                    "centered = tl.where(mask, h - mean, 0.0)",
                    "h = centered * tl.rsqrt(tl.sum(centered * centered, axis=0) / row_len + {eps})"],
    "rms_norm": ["h = h * tl.rsqrt(tl.sum(tl.where(mask, h * h, 0.0), axis=0) / row_len + {eps}) * gamma"],
    "l2_normalize": ["h = h / tl.maximum(tl.sqrt(tl.sum(tl.where(mask, h * h, 0.0), axis=0)), {eps})"],
    "batch_norm": ["h = (h - running_mean) * tl.rsqrt(running_var + {eps}) * gamma + beta"],
}
_STANDARDIZED = ("layer_norm", "group_norm", "instance_norm")
# Short rows: a reduction whose rows are all under SHORT_ROW_BYTES reads a [ROWS, BLOCK_N] tile of
# SHORT_ROW_TILE values per program; one row per program keeps too few bytes in flight. A/B on the H100
# (benchmarks/results/ab_h100/round5_short_rows*.txt): rows of 1 KB 54% -> 88% of the floor (seeds 67,
# 204), of 1.5 KB 80% -> 93% (156, 372); rows of 2 KB and more were slower with it on 20 of 25 seeds
# (by up to 6%).
SHORT_ROW_BYTES, SHORT_ROW_TILE = 2048, 2048


def _reduced_layout(row: str, mask: str | None = None) -> Layout:
    """Operands of ops after a row reduction, whose values are one per row: indexed by ``row`` (a program's row,
    loaded once) or, with ``mask``, by a vector of rows (one per lane)."""
    index = {"col": f"{row} % n_chan", "row": f"{row} // n_chan", "full": row}
    return Layout(index, mask=mask) if mask else Layout(index, frozenset(index))


def _row_geometry(task: FusionTask, step: Step) -> tuple[str, Layout, str]:
    """(row length expression in the wrapper, operand layout before/after a norm, its docstring line)."""
    rank = len(task.inputs[0].shape)
    per_program = {"row"} if rank == 2 or step.op != "group_norm" else set()
    if step.op == "group_norm":
        groups = step.params["groups"]
        if rank == 2:
            return (f"x.shape[-1] // {groups}",
                    Layout({"col": f"(row % {groups}) * row_len + cols", "row": f"row // {groups}",
                            "full": "row * row_len + cols", "chan": f"(row % {groups}) * row_len + cols"},
                           frozenset(per_program)),
                    f"rows are one group of {groups} per sample: [M, N] -> [M * {groups}, N / {groups}]")
        return (f"(x.shape[1] // {groups}) * x.shape[-1]",
                Layout({"col": "cols % n_cols",
                        "row": f"(row // {groups}) * n_chan + (row % {groups}) * (n_chan // {groups}) + cols // n_cols",
                        "full": "row * row_len + cols",
                        "chan": f"(row % {groups}) * (n_chan // {groups}) + cols // n_cols"}),
                f"rows are one group of {groups} per sample: [B, M, N] -> [B * {groups}, (M / {groups}) * N]")
    chan = "cols" if rank == 2 else "row % n_chan"
    return ("x.shape[-1]",
            Layout({"col": "cols", "row": "row", "full": "row * row_len + cols", "chan": chan},
                   frozenset(per_program | ({"chan"} if rank == 3 else set()))),
            "one row of the last dimension per program")


def _row(task: FusionTask) -> str:
    kernel, launch = _row_kernel(task, "fused_kernel_triton", "x")
    wrapper = "\n".join([f"def fused_kernel_triton_wrapper({', '.join(task.arg_names)}):", *_contiguous(task),
                         *launch, "    return out"])
    return kernel + "\n\n\n" + wrapper + "\n"


# The row kernel's warps, by row width (BLOCK_N lanes): 16 above 8192. Where no count wins everywhere, several
# are timed (Triton's autotuner, once per row length). A/B on the H100 (benchmarks/results/ab_h100/
# round3_row_warps.txt, round3_short_rows.txt, round6_row_warps_4.txt, round6_row_warps_8.txt): at 8192 lanes
# 16 warps made reductions of cheap chains 1-7% faster and an fp32 rms_norm 1.5x, and cost normalizations and
# exp-heavy chains 4-13%; at 4096 and 8192 lanes 4 warps (up to 64 values a thread) made compute-bound 16-bit
# chains up to 1.25x faster (sin) and none slower than 0.995x; at 2048 lanes 8 warps beside 4 made rows 1.014x
# faster (0.996x-1.046x); up to 1024 lanes 1 or 2 warps (fewer cross-warp steps in a row's sums) made some
# rows up to 1.4x faster and others 2-6% slower, and 8 warps gained nothing (1.002x).
_ROW_WARPS = [
    "ROW_CONFIGS = [triton.Config({}, num_warps=warps) for warps in (1, 2, 4, 8, 16)] if DEVICE == \"cuda\" else [",
    "    triton.Config({}, num_warps=4),",
    "]",
    "",
    "",
    "def row_configs(configs, named_args, **kwargs):",
    '    """The ROW_CONFIGS worth timing at this BLOCK_N: 1-4 warps to 1024 lanes, 4 and 8 to 4096, 4-16 at 8192."""',
    "    block = kwargs[\"BLOCK_N\"]",
    "    warps = ((1, 2, 4) if block <= 1024 else (4, 8) if block <= 4096 else (4, 8, 16) if block == 8192 else (16,))",
    "    return [config for config in configs if config.num_warps in warps]",
    "",
    "",
    "@triton.autotune(configs=ROW_CONFIGS, key=[\"row_len\"], prune_configs_by={\"early_config_prune\": row_configs})",
]


def _row_sizes(source: str, rank: int) -> list[tuple[str, str]]:
    """A row kernel's size parameters and their wrapper arguments: its row length, the length of the last
    dimension and, for [B, C, N] inputs, the channel count."""
    return [("row_len", "row_len"), ("n_cols", f"{source}.shape[-1]"),
            *([("n_chan", f"{source}.shape[1]")] if rank == 3 else [])]


def _row_kernel(task: FusionTask, name: str, source: str) -> tuple[str, list[str]]:
    """The row kernel for ``task`` (first op: none or pointwise; then one row op) reading ``source``.

    Returns the kernel's source and the wrapper lines that allocate ``out`` and launch it.
    """
    by_name = {i.name: i for i in task.inputs}
    k_row = next(k for k, s in enumerate(task.steps) if catalog.get(s.op).family in (Family.REDUCTION, Family.NORM))
    row_step, row_op = task.steps[k_row], catalog.get(task.steps[k_row].op)
    rank = len(task.inputs[0].shape)
    row_len, layout, geometry = _row_geometry(task, row_step)
    row_len = row_len.replace("x.", f"{source}.")
    reduces = row_op.family is Family.REDUCTION
    after = _reduced_layout("row") if reduces else layout
    longest = _longest_row(task, row_step)
    if longest > MAX_ROW_BLOCK:
        return _looped_row_kernel(task, name, source, k_row, layout, row_len, geometry)

    # A reduction reads each row once and keeps nothing of it: evict_first lets the stream pass through L2
    # (measured on the H100 at bench shapes: 8192-wide fp16 rows 79% -> 86% of the floor, 1-4 points elsewhere;
    # normalizations, which store the row back, gained nothing).
    hint = ", eviction_policy='evict_first'" if reduces else ""
    tiled = reduces and longest * ITEMSIZE[task.dtype] < SHORT_ROW_BYTES
    if tiled:  # ROWS rows per program: vectors over rows or columns loaded once per tile and broadcast
        per_col = ("cols", "cols < row_len", "[None, :]")
        per_row = ("rows", "row_mask", "[:, None]")
        chan = per_col if rank == 2 else ("rows % n_chan", "row_mask", "[:, None]")
        layout = Layout({"full": "rows[:, None] * row_len + cols[None, :]"},
                        vectors={"col": per_col, "row": per_row, "chan": chan})
        after = _reduced_layout("rows", mask="row_mask")
        head = ["rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)", "cols = tl.arange(0, BLOCK_N)",
                "row_mask = rows < n_rows", "mask = row_mask[:, None] & (cols[None, :] < row_len)"]
        stats = _reduction(row_step, "row_len", tile=True)
        store = "tl.store(out_ptr + rows, h.to(out_ptr.dtype.element_ty), mask=row_mask)"
    else:
        head = ["row = tl.program_id(0).to(tl.int64)", "cols = tl.arange(0, BLOCK_N)", "mask = cols < row_len"]
        stats = (_reduction(row_step, "row_len", tile=False) if reduces else
                 [line.format(**row_step.params)
                  for line in _STATS["standardize" if row_step.op in _STANDARDIZED else row_step.op]])
        store = ("tl.store(out_ptr + row, h.to(out_ptr.dtype.element_ty))" if reduces else
                 "tl.store(out_ptr + row * row_len + cols, h.to(out_ptr.dtype.element_ty), mask=mask)")
    body = [f"h = tl.load(x_ptr + {layout.index['full']}, mask=mask, other=0.0{hint}).to(tl.float32)"]
    for k, step in enumerate(task.steps[:k_row], start=1):
        body += _emit_pointwise(k, step, by_name, layout, task.dtype)
    body.append(f"# {k_row + 1}. {step_label(row_step)}: {row_op.doc}")
    operands = dict(zip((o.stem for o in catalog.operands(row_op, row_step.params)), row_step.inputs))
    for operand in catalog.operands(row_op, row_step.params):
        body.append(layout.load(operands[operand.stem], operand.layout, var=operand.stem))
    body += stats
    if row_step.op in _STANDARDIZED:
        body.append("h = h * gamma + beta")
    for k, step in enumerate(task.steps[k_row + 1:], start=k_row + 2):
        body += _emit_pointwise(k, step, by_name, after, task.dtype)
    body = [*head, *body, store]
    sizes, size_args = _read_sizes(body, [*([("n_rows", "n_rows")] if tiled else []), *_row_sizes(source, rank)])
    shape = ", ".join(str(d) for d in task.inputs[0].shape)
    held = ("ROWS rows of the last dimension per program, a [ROWS, BLOCK_N] tile held in registers (masked)"
            if tiled else f"{geometry[0].upper() + geometry[1:]}, held in registers (BLOCK_N lanes, masked)")
    doc = (f'"""{" -> ".join(step_label(s) for s in task.steps)}; x [{shape}].\n\n'
           f'    {held}; fp32 math, one cast on store.\n    """')
    kernel = "\n".join([
        *_ROW_WARPS,
        "@triton.jit",
        *_kernel_def(name, [*_kernel_args(task), "out_ptr", *sizes], ["ROWS", "BLOCK_N"] if tiled else ["BLOCK_N"]),
        f"    {doc}",
        *("    " + line for line in body),
    ])
    launch_args = [source, *[i.name for i in task.inputs[1:]], "out", *size_args,
                   *(["ROWS=ROWS"] if tiled else []), "BLOCK_N=BLOCK_N"]
    launch = [_row_output(row_step, source), f"    row_len = {row_len}",
              "    BLOCK_N = triton.next_power_of_2(row_len)"]
    if tiled:
        launch += [f"    n_rows = {source}.numel() // row_len",
                   f"    ROWS = max(1, {SHORT_ROW_TILE} // BLOCK_N)",
                   *_launch(f"{name}[(triton.cdiv(n_rows, ROWS),)]", launch_args)]
    else:
        launch += _launch(f"{name}[({source}.numel() // row_len,)]", launch_args)
    return kernel, launch


def _row_output(step: Step, source: str) -> str:
    """The wrapper line allocating a row kernel's ``out``: a value per row for a reduction, else ``source``'s shape."""
    if catalog.get(step.op).family is not Family.REDUCTION:
        return f"    out = torch.empty_like({source})"
    out_shape = f"(*{source}.shape[:-1], 1)" if step.params["keepdim"] else f"{source}.shape[:-1]"
    return f"    out = torch.empty({out_shape}, dtype={source}.dtype, device={source}.device)"


# Rows longer than MAX_ROW_BLOCK are walked in CHUNK-wide slices that carry the row op's running state (_RUNNING).
# A reduction reads the row once (evict_first, as in the row form) and stores its finished state; a normalization
# takes its statistics in pass 1, then reads the row again in pass 2, recomputes the pointwise ops before it,
# normalizes and stores. Of the generated tasks only 3D group norms have such rows (at their bench shapes); other
# row ops meet them only in tasks whose shapes were set by hand. Those walk [C_BLOCK, BLOCK_N] tiles (_group_walk).
_LOOPED = {  # row op -> (its _RUNNING state or None, statements after pass 1 (a reduction's value), pass 2 or None)
    "sum": ("sum", ["h = total"], None),
    "mean": ("mean", ["h = total / row_len"], None),
    "max": ("max", ["h = best"], None),
    "min": ("min", ["h = best"], None),
    "logsumexp": ("logsumexp", ["h = run_max + tl.log(run_sum)"], None),
    "l2norm": ("l2norm", ["h = tl.sqrt(total)"], None),
    "var": ("var", ["h = run_m2 / (row_len - {correction})"], None),
    "softmax": ("logsumexp", [], "h = tl.exp(h - run_max) / run_sum"),
    "log_softmax": ("logsumexp", ["log_sum = run_max + tl.log(run_sum)"], "h = h - log_sum"),
    "standardize": ("var", ["rstd = tl.rsqrt(run_m2 / row_len + {eps})"], "h = (h - run_mean) * rstd * gamma + beta"),
    "rms_norm": ("l2norm", ["rstd = tl.rsqrt(total / row_len + {eps})"], "h = h * rstd * gamma"),
    "l2_normalize": ("l2norm", ["norm = tl.maximum(tl.sqrt(total), {eps})"], "h = h / norm"),
    "batch_norm": (None, [], _STATS["batch_norm"][0]),  # per channel: one pass, no statistics
}
_STATE_DOC = {  # pass 1's comment, by _RUNNING state ({walk}: slice by slice, or tile by tile)
    "sum": "the row's sum, {walk}", "mean": "the row's sum, {walk}",
    "max": "the row's max, {walk}", "min": "the row's min, {walk}",
    "l2norm": "the row's sum of squares, {walk}",
    "logsumexp": "the row's max and sum of exp(x - max), {walk} (the sum rescaled as the max grows)",
    "var": "mean and M2 of the row, {walk} (Chan's combination)",
}
# The slice width is picked in the wrapper from the row length (row_slices): the widest of LOOPED_SLICES that divides
# the row, on 16 warps, else 4096 values on 8 (our reading: a wider slice's partial last one wastes issue slots, which
# count where rows of an odd length load one value at a time). A/B on the H200
# (benchmarks/results/ab_h200/round10_looped_*.txt), against 4096 values on 8 warps for every row: fp16 softmax over
# rows of 24576-65536 values 1.05-1.15x faster, layer_norm 1.03-1.18x (0.83x -> 0.98x torch.compile at 32768), fp32
# both 1.08-1.19x, the sum 1.03x; rows of 20011 kept at 4096 (8192: 0.7-0.8x, 16384: 0.5-0.6x). Persistent grids and
# per-lane Welford statistics were timed too and not taken. 3D group norms walk tiles instead (GROUP_TILES).
LOOPED_SLICES = (16384, 8192)


def _row_slices() -> list[str]:
    """The generated helper giving a looped row kernel its CHUNK and warps for a row length."""
    listed = ", ".join(str(width) for width in LOOPED_SLICES)
    return [
        "def row_slices(row_len):",
        f'    """CHUNK and warps for rows of row_len values: the widest of {listed} that divides the row, on 16 warps;',
        '    else 4096 on 8."""',
        "    if DEVICE != \"cuda\":",
        "        return 256, 8  # small slices in the interpreter exercise the loop",
        f"    chunk = next((width for width in ({listed}) if row_len % width == 0), 4096)",
        "    return chunk, 16 if chunk > 4096 else 8",
        "",
        "",
    ]


# A 3D group norm's looped kernel walks a group's [C / G, N] values in [C_BLOCK, BLOCK_N] tiles of TILE values
# at most, TILE and warps autotuned (once per shape) over GROUP_TILES. A/B on the H200 (benchmarks/results/ab_h200/
# round11_group_tile_widths.txt), against 8192-value slices whose gamma and beta were gathered per value: 1.04-1.38x
# faster at the best tile, which differs by task (16384 on 16 warps for 6 of 9; on 65536-value rows of an exp-heavy
# chain 4096 on 4 was fastest and 16384 on 16 0.86x; 4096 on 4 is 3.2x slower on an fp32 chain). The generator's
# files before and after, autotuned: 1.04-1.38x on all nine (round11_group_tiles.txt).
GROUP_TILES = ((16384, 16), (8192, 8), (4096, 4))


def _group_tiles(groups: int) -> list[str]:
    """The generated configurations and heuristics giving a 3D group norm's looped kernel its tiles."""
    listed = ", ".join(f"({tile}, {warps})" for tile, warps in GROUP_TILES)
    return [
        "GROUP_CONFIGS = [triton.Config({\"TILE\": tile}, num_warps=warps)",
        f"                 for tile, warps in ({listed})] if DEVICE == \"cuda\" else [",
        "    triton.Config({\"TILE\": 256}, num_warps=8),  # small tiles in the interpreter exercise the loop",
        "]",
        "",
        "",
        "def tile_width(args):",
        '    """BLOCK_N: the widest power of two that divides N (no padding) if it is 128 wide or all of N, else N',
        '    padded to a power of two; TILE at most."""',
        "    block_n = min(args[\"n_cols\"] & -args[\"n_cols\"], args[\"TILE\"])",
        "    if block_n < min(128, args[\"n_cols\"]):",
        "        block_n = min(triton.next_power_of_2(args[\"n_cols\"]), args[\"TILE\"])",
        "    return block_n",
        "",
        "",
        "def tile_channels(args):",
        '    """C_BLOCK: the channels that fill TILE, at most a group\'s channel count padded to a power of two."""',
        f"    return min(args[\"TILE\"] // args[\"BLOCK_N\"], triton.next_power_of_2(args[\"n_chan\"] // {groups}))",
        "",
        "",
        "@triton.autotune(configs=GROUP_CONFIGS, key=[\"row_len\", \"n_cols\", \"n_chan\"])",
        "@triton.heuristics({\"BLOCK_N\": tile_width, \"C_BLOCK\": tile_channels})",
    ]


def _group_walk(groups: int) -> tuple[Layout, list[str], str, list[str]]:
    """A 3D group norm's row ([C / G channels, N] values) as [C_BLOCK, BLOCK_N] tiles: (operand layout, lines before
    the passes, the loop, its first lines). Per-channel and per-row operands load as a vector of the tile's channels,
    broadcast over its positions: no division per value, no gather."""
    chans = f"(row % {groups}) * group_chans + chans"
    layout = Layout({"full": "row * row_len + chans[:, None] * n_cols + pos[None, :]"},
                    vectors={"col": ("pos", "pos < n_cols", "[None, :]"),
                             "chan": (chans, "chans < group_chans", "[:, None]"),
                             "row": (f"(row // {groups}) * n_chan + {chans}", "chans < group_chans", "[:, None]")})
    before = ["tl.static_assert(C_BLOCK * BLOCK_N <= TILE)  # the heuristics keep a tile within its budget",
              f"group_chans = n_chan // {groups}", "n_blocks = tl.cdiv(n_cols, BLOCK_N)"]
    head = ["chans = (tile // n_blocks) * C_BLOCK + tl.arange(0, C_BLOCK)",
            "pos = (tile % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)",
            "mask = (chans < group_chans)[:, None] & (pos < n_cols)[None, :]"]
    return layout, before, "for tile in range(0, tl.cdiv(group_chans, C_BLOCK) * n_blocks):", head


def _looped_row_kernel(task: FusionTask, name: str, source: str, k_row: int, layout: Layout, row_len: str,
                       geometry: str) -> tuple[str, list[str]]:
    """The row kernel over rows too long for registers: CHUNK-wide slices, one pass for a reduction, two for a
    normalization (``_LOOPED``); a 3D group norm's rows in [C_BLOCK, BLOCK_N] tiles of channels and positions
    (``_group_walk``). Returns the kernel and the wrapper lines that allocate ``out`` and launch it."""
    by_name = {i.name: i for i in task.inputs}
    row_step, row_op = task.steps[k_row], catalog.get(task.steps[k_row].op)
    reduces = row_op.family is Family.REDUCTION
    state, between, normalize = _LOOPED["standardize" if row_step.op in _STANDARDIZED else row_step.op]
    operands = dict(zip((o.stem for o in catalog.operands(row_op, row_step.params)), row_step.inputs))
    tiled = row_step.op == "group_norm" and len(task.inputs[0].shape) == 3
    if tiled:
        layout, before, loop, head = _group_walk(row_step.params["groups"])
    else:
        before, loop, head = [], "for start in range(0, row_len, CHUNK):", ["cols = start + tl.arange(0, CHUNK)",
                                                                             "mask = cols < row_len"]
    pre = []
    for k, step in enumerate(task.steps[:k_row], start=1):
        pre += _emit_pointwise(k, step, by_name, layout, task.dtype)

    def walk_start(hint: str) -> list[str]:
        return [loop, *("    " + line for line in head),
                f"    h = tl.load(x_ptr + {layout.index['full']}, mask=mask, other=0.0{hint}).to(tl.float32)",
                *("    " + line for line in pre)]

    body = ["row = tl.program_id(0).to(tl.int64)", f"# {k_row + 1}. {step_label(row_step)}: {row_op.doc}", *before]
    if state:
        init, update, _ = _RUNNING[state]
        walk = "tile by tile" if tiled else "slice by slice"
        body += [f"# {'' if reduces else 'pass 1: '}{_STATE_DOC[state].format(walk=walk)}",
                 *init, *walk_start(", eviction_policy='evict_first'" if reduces else ""),
                 *("    " + line.format(mask="mask", axis=None if tiled else 0) for line in update),
                 *(line.format(**row_step.params) for line in between)]
    if reduces:
        for k, step in enumerate(task.steps[k_row + 1:], start=k_row + 2):
            body += _emit_pointwise(k, step, by_name, _reduced_layout("row"), task.dtype)
        body.append("tl.store(out_ptr + row, h.to(out_ptr.dtype.element_ty))")
    else:
        affine = ", affine" if operands else ""
        body += [f"# {'pass 2: ' if state else ''}normalize{affine}, the ops after it, store", *walk_start("")]
        for operand in catalog.operands(row_op, row_step.params):
            body.append("    " + layout.load(operands[operand.stem], operand.layout, var=operand.stem))
        body.append("    " + normalize.format(**row_step.params))
        for k, step in enumerate(task.steps[k_row + 1:], start=k_row + 2):
            body += ["    " + line for line in _emit_pointwise(k, step, by_name, layout, task.dtype)]
        body.append(f"    tl.store(out_ptr + {layout.index['full']}, h.to(out_ptr.dtype.element_ty), mask=mask)")
    sizes, size_args = _read_sizes(body, _row_sizes(source, len(task.inputs[0].shape)))
    shape = ", ".join(str(d) for d in task.inputs[0].shape)
    walked = ("walked in [C_BLOCK, BLOCK_N] tiles of its channels and positions" if tiled else
              "walked in CHUNK-wide slices")
    doc = (f'"""{" -> ".join(step_label(s) for s in task.steps)}; x [{shape}].\n\n'
           f'    {geometry[0].upper() + geometry[1:]}, {walked} (rows too long for registers); fp32 math, one cast on '
           f'store.\n    """')
    kernel = "\n".join([
        *(_group_tiles(row_step.params["groups"]) if tiled else _row_slices()),
        "@triton.jit",
        *_kernel_def(name, [*_kernel_args(task), "out_ptr", *sizes],
                     ["TILE", "C_BLOCK", "BLOCK_N"] if tiled else ["CHUNK"]),
        f"    {doc}",
        *("    " + line for line in body),
    ])
    launch_args = [source, *[i.name for i in task.inputs[1:]], "out", *size_args,
                   *([] if tiled else ["CHUNK=CHUNK", "num_warps=warps"])]
    launch = [
        _row_output(row_step, source),
        f"    row_len = {row_len}",
        *([] if tiled else ["    CHUNK, warps = row_slices(row_len)"]),
        *_launch(f"{name}[({source}.numel() // row_len,)]", launch_args),
    ]
    return kernel, launch


# -- matmul plan -------------------------------------------------------------------------------------
# A tiled tl.dot kernel (fp32 accumulation, grouped tile order for L2 reuse) with the pointwise
# epilogue fused; autotuned over Hopper-sized tiles on a GPU, one small tile in the interpreter.
# A reduction or normalization after the matmul runs as a second kernel (the row plan's) over the
# matmul's output, kept in the task dtype.

_MATMUL_CONFIGS = {  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
    "16bit": [(128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (256, 128, 64, 8, 3), (128, 128, 32, 4, 4)],
    "float32": [(128, 128, 32, 8, 3), (64, 128, 32, 4, 4), (128, 64, 32, 4, 4)],
}
_DOT = {  # the k-loop's dot by dtype (float32: by variant)
    "tiled": "acc = tl.dot(a, b, acc, input_precision=\"ieee\")",
    "tf32x3": "acc = tl.dot(a, b, acc, input_precision=\"tf32x3\")",
    "16bit": ["if DOT_FP32:  # Triton's interpreter: its 16-bit dots are not exact, fp32 ones are",
              "    acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=\"ieee\")",
              "else:",
              "    acc = tl.dot(a, b, acc)"],
}
PERSISTENT_MARK = "# persistent variant:"
_PERSISTENT_CONFIGS = [(128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 8, 4)]
_TMA_HELPERS = '''def _tma_operand(t):
    """t if TMA can address it (unit last stride, 16-byte aligned base and rows), else such a copy."""
    if t.stride(-1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0:
        return t
    align = 16 // t.element_size()
    padded = torch.empty((t.shape[0], triton.cdiv(t.shape[1], align) * align), dtype=t.dtype, device=t.device)
    return padded[:, :t.shape[1]].copy_(t)
'''


# A reduction after the matmul never materializes the [M, N] product: each [BLOCK_M, BLOCK_N] tile
# writes its rows' partial statistics over its BLOCK_N columns (fp32, one column per tile of N), and a
# combine kernel merges a row's partials and applies the later pointwise ops.
_PARTIALS = {  # op -> ((partial, identity for masked lanes), ...), epilogue statements computing them
    "sum": ((("part_sum", "0.0"),), ["part_sum = tl.sum(tl.where(mask, h, 0.0), axis=1)"]),
    "mean": ((("part_sum", "0.0"),), ["part_sum = tl.sum(tl.where(mask, h, 0.0), axis=1)"]),
    "l2norm": ((("part_sq", "0.0"),), ["part_sq = tl.sum(tl.where(mask, h * h, 0.0), axis=1)"]),
    "max": ((("part_max", "float('-inf')"),), ["part_max = tl.max(tl.where(mask, h, float('-inf')), axis=1)"]),
    "min": ((("part_min", "float('inf')"),), ["part_min = tl.min(tl.where(mask, h, float('inf')), axis=1)"]),
    "logsumexp": ((("part_max", "float('-inf')"), ("part_sumexp", "0.0")),
                  ["part_max = tl.max(tl.where(mask, h, float('-inf')), axis=1)",
                   "part_sumexp = tl.sum(tl.where(mask, tl.exp(h - part_max[:, None]), 0.0), axis=1)"]),
    "var": ((("part_count", "0.0"), ("part_mean", "0.0"), ("part_m2", "0.0")),
            ["part_count = tl.sum(mask.to(tl.float32), axis=1)",
             "part_mean = tl.sum(tl.where(mask, h, 0.0), axis=1) / tl.maximum(part_count, 1.0)",
             "centered = tl.where(mask, h - part_mean[:, None], 0.0)",
             "part_m2 = tl.sum(centered * centered, axis=1)"]),
}
_ENDING = {False: "one cast on store", True: "the rows' partial statistics stored in fp32, never the product"}
_COMBINE = {  # op -> statements merging a row's partials (vectors over its tiles; masked lanes hold the identity)
    "sum": ["h = tl.sum(part_sum, axis=0)"],
    "mean": ["h = tl.sum(part_sum, axis=0) / n_reduced"],
    "l2norm": ["h = tl.sqrt(tl.sum(part_sq, axis=0))"],
    "max": ["h = tl.max(part_max, axis=0)"],
    "min": ["h = tl.min(part_min, axis=0)"],
    "logsumexp": ["row_max = tl.max(part_max, axis=0)",
                  "h = row_max + tl.log(tl.sum(part_sumexp * tl.exp(part_max - row_max), axis=0))"],
    "var": ["# Chan: M2 = sum of the tiles' M2 + sum of count * (tile mean - mean)^2",
            "mean = tl.sum(part_count * part_mean, axis=0) / n_reduced",
            "spread = part_mean - mean",
            "m2 = tl.sum(part_m2, axis=0) + tl.sum(part_count * spread * spread, axis=0)",
            "h = m2 / (n_reduced - {correction})"],
}


def _combine_kernel(task: FusionTask, name: str, rows: str) -> tuple[str, list[str]]:
    """Merge the matmul tiles' partials of ``task.steps[0]`` (a reduction) per row, then the later ops.

    ``task.inputs[0]`` stands for the matmul's output; ``rows`` is the wrapper's count of output rows.
    Returns the kernel and the wrapper lines that allocate ``out`` and launch it.
    """
    by_name = {i.name: i for i in task.inputs}
    step = task.steps[0]
    partials, _ = _PARTIALS[step.op]
    rank = len(task.inputs[0].shape)
    after = _reduced_layout("row")
    body = ["row = tl.program_id(0).to(tl.int64)", "tiles = tl.arange(0, BLOCK_T)", "tile_mask = tiles < n_tiles",
            *(f"{part} = tl.load({part}_ptr + row * n_parts + tiles, mask=tile_mask, other={identity})"
              for part, identity in partials),
            f"# 2. {step_label(step)}: {catalog.get(step.op).doc}",
            *(line.format(**step.params) for line in _COMBINE[step.op])]
    for k, later in enumerate(task.steps[1:], start=3):
        body += _emit_pointwise(k, later, by_name, after, task.dtype)
    body.append("tl.store(out_ptr + row, h.to(out_ptr.dtype.element_ty))")
    operands = _kernel_args(task)[1:]
    sizes, size_args = _read_sizes(body, [("n_tiles", "n_tiles"), ("n_parts", "n_parts"), ("n_reduced", "N"),
                                          *([("n_chan", "M")] if rank == 3 else [])])
    doc = (f'"""{" -> ".join(step_label(s) for s in task.steps)}: one program per row of the matmul output.\n\n'
           "    Merges the row's per-tile partials (n_tiles of them, fp32), applies the later ops, one cast on store.\n"
           '    """')
    kernel = "\n".join([
        "@triton.jit",
        *_kernel_def(name, [*(p + "_ptr" for p, _ in partials), *operands, "out_ptr", *sizes], ["BLOCK_T"]),
        f"    {doc}",
        *("    " + line for line in body),
    ])
    lead = "(x.shape[0], M)" if rank == 3 else "(M,)"
    out_shape = f"(*{lead}, 1)" if step.params["keepdim"] else lead
    launch_args = [*(p for p, _ in partials), *[i.name for i in task.inputs[1:]], "out", *size_args,
                   "BLOCK_T=triton.next_power_of_2(n_tiles)"]
    launch = [
        "    # the tiles of N the autotuned matmul used, one partial each",
        "    n_tiles = triton.cdiv(N, fused_kernel_triton.best_config.kwargs[\"BLOCK_N\"])",
        f"    out = torch.empty({out_shape}, dtype=x.dtype, device=x.device)",
        *_launch(f"{name}[({rows},)]", launch_args),
    ]
    return kernel, launch


def _emit_batch_norm(k: int, step: Step, layout: Layout) -> list[str]:
    """Inference batch norm in an epilogue: running stats and affine loaded per channel."""
    op = catalog.get(step.op)
    names = dict(zip((o.stem for o in catalog.operands(op, step.params)), step.inputs))
    loads = [layout.load(names[o.stem], o.layout, var=o.stem) for o in catalog.operands(op, step.params)]
    return [f"# {k}. {step_label(step)}: {op.doc}", *loads,
            *(line.format(**step.params) for line in _STATS["batch_norm"])]


def _matmul(task: FusionTask, variant: str) -> str:
    """The matmul plan, in one of ``variants(task)``."""
    root = task.steps[0]
    root_op = catalog.get(root.op)
    # inference batch norm is per channel (pointwise): it stays in the epilogue
    k_row = next((k for k, s in enumerate(task.steps)
                  if catalog.get(s.op).family in (Family.REDUCTION, Family.NORM) and s.op != "batch_norm"),
                 len(task.steps))
    epilogue, rest = task.steps[1:k_row], task.steps[k_row:]
    by_name = {i.name: i for i in task.inputs}
    batched = root.op == "bmm"
    epilogue_inputs = [by_name[n] for s in epilogue for n in s.inputs]
    args = ["x_ptr", "w_ptr", *(["bias_ptr"] if root.op == "linear_bias" else []),
            *[f"{i.name}_ptr" if i.dtype != SCALAR_DTYPE else i.name for i in epilogue_inputs]]
    linear = root.op.startswith("linear")
    persistent, wide = variant == "persistent", task.dtype != "float32"
    if persistent:
        strides = (["stride_xb", "stride_xm", "stride_wb", "stride_wk"] if batched else
                   ["stride_xm", "stride_wn" if linear else "stride_wk"])
    elif batched:
        strides = ["stride_xb", "stride_xm", "stride_xk", "stride_wb", "stride_wk", "stride_wn"]
    else:
        strides = ["stride_xm", "stride_xk", "stride_wk", "stride_wn"]
    base = "batch * M * N + " if batched else ""
    columns, rows = ("rn", "rn < N", "[None, :]"), (("batch * M + " if batched else "") + "rm", "rm < M", "[:, None]")
    layout = Layout({"full": base + "rm[:, None] * N + rn[None, :]"},
                    vectors={"col": columns, "row": rows,
                             "chan": (("rm", "rm < M", "[:, None]") if batched else columns)})  # channel: dim 1
    epilogue_lines = [f"# 1. {step_label(root)}: {root_op.doc}", "h = acc"]
    if root.op == "linear_bias":
        epilogue_lines += [layout.load("bias", "col"), "h = h + bias"]
    for k, step in enumerate(epilogue, start=2):
        epilogue_lines += _emit_batch_norm(k, step, layout) if step.op == "batch_norm" else \
            _emit_pointwise(k, step, by_name, layout, task.dtype)
    if rest and catalog.get(rest[0].op).family is Family.REDUCTION:  # store partials, not the product
        parts, statements = _PARTIALS[rest[0].op]
        outputs = [f"{part}_ptr" for part, _ in parts] + ["n_parts"]
        results = [part for part, _ in parts] + ["n_parts"]
        row_index = ("(batch * M + rm)" if batched else "rm")
        epilogue_lines += [f"# {k_row + 1}. {step_label(rest[0])}: this tile's partial statistics of its rows",
                           *statements,
                           *(f"tl.store({part}_ptr + {row_index} * n_parts + pid_n, {part}, mask=rm < M)"
                             for part, _ in parts)]
    else:
        outputs, results = ["out_ptr"], ["h" if rest else "out"]
        epilogue_lines.append("tl.store(out_ptr + " + layout.index["full"] + ", h.to(out_ptr.dtype.element_ty), "
                              "mask=mask)")
    if persistent:
        return _persistent_matmul(task, k_row, args + outputs, strides, epilogue_lines, epilogue_inputs, rest,
                                  results)
    body = ["pid = tl.program_id(0)", *(["batch = tl.program_id(1)"] if batched else []),
            "# grouped order: GROUP_M row-tiles share each column of w while it is in L2",
            "tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)",
            *_grouped_order("pid"),
            "rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)",
            "rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)",
            "rk = tl.arange(0, BLOCK_K)",
            "x_ptrs = x_ptr + " + ("batch * stride_xb + " if batched else "") + "rm[:, None] * stride_xm + "
            "rk[None, :] * stride_xk",
            "w_ptrs = w_ptr + " + ("batch * stride_wb + " if batched else "") + "rk[:, None] * stride_wk + "
            "rn[None, :] * stride_wn",
            "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
            "for k in range(0, K, BLOCK_K):",
            "    a = tl.load(x_ptrs, mask=(rm[:, None] < M) & (rk[None, :] + k < K), other=0.0)",
            "    b = tl.load(w_ptrs, mask=(rk[:, None] + k < K) & (rn[None, :] < N), other=0.0)",
            *("    " + line for line in (_DOT["16bit"] if wide else [_DOT[variant]])),
            "    x_ptrs += BLOCK_K * stride_xk",
            "    w_ptrs += BLOCK_K * stride_wk",
            "mask = (rm[:, None] < M) & (rn[None, :] < N)",
            *epilogue_lines]

    fused = [step_label(s) for s in task.steps[:k_row]]
    doc = (f'"""{" -> ".join(fused)}: a [M, N] tile of x @ w per program{" and batch" if batched else ""}, '
           f'the epilogue fused.\n\n    fp32 accumulation in tl.dot; {_ENDING[results[-1] == "n_parts"]}.\n    """')
    kernel = "\n".join([
        *_autotuned(["# Hopper-sized tiles on a GPU; one small tile in Triton's interpreter (its autotuner needs a "
                     "GPU)."], _MATMUL_CONFIGS["float32" if task.dtype == "float32" else "16bit"]),
        *_kernel_def("fused_kernel_triton", [*args, *outputs, "M", "N", "K", *strides],
                     [*(["DOT_FP32"] if wide else []), "BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"]),
        f"    {doc}",
        *("    " + line for line in body),
    ])

    w_strides = {"linear": ["w.stride(1)", "w.stride(0)"], "linear_bias": ["w.stride(1)", "w.stride(0)"],
                 "matmul": ["w.stride(0)", "w.stride(1)"],
                 "bmm": ["w.stride(0)", "w.stride(1)", "w.stride(2)"]}[root.op]
    x_strides = ["x.stride(0)", "x.stride(1)", "x.stride(2)"] if batched else ["x.stride(0)", "x.stride(1)"]
    n_expr = "w.shape[0]" if root.op.startswith("linear") else "w.shape[-1]"
    launch_args = ["x", "w", *(["bias"] if root.op == "linear_bias" else []), *[i.name for i in epilogue_inputs],
                   *results, "M", "N", "K", *x_strides, *w_strides, *(["DOT_FP32=not x.is_cuda"] if wide else [])]
    grid = ("lambda meta: (triton.cdiv(M, meta[\"BLOCK_M\"]) * triton.cdiv(N, meta[\"BLOCK_N\"]), "
            + ("x.shape[0])" if batched else ")"))
    lines = [f"def fused_kernel_triton_wrapper({', '.join(task.arg_names)}):", *_contiguous(task),
             "    M, K = x.shape[-2], x.shape[-1]", f"    N = {n_expr}",
             *_matmul_outputs(task, results, batched),
             f"    grid = {grid}", *_launch("fused_kernel_triton[grid]", launch_args)]
    return _with_row_kernel(task, k_row, rest, [kernel], lines)


def _grouped_order(tile: str) -> list[str]:
    """(pid_m, pid_n) of output tile number ``tile`` in grouped order: GROUP_M row-tiles walk each column."""
    return [f"first_m = ({tile} // (GROUP_M * tiles_n)) * GROUP_M",
            "group_m = tl.minimum(tiles_m - first_m, GROUP_M)",
            f"pid_m = first_m + ({tile} % (GROUP_M * tiles_n)) % group_m",
            f"pid_n = ({tile} % (GROUP_M * tiles_n)) // group_m"]


def _matmul_outputs(task: FusionTask, results: list[str], batched: bool) -> list[str]:
    """Wrapper lines allocating what the matmul kernel writes: its [.., M, N] output, or the partials."""
    if results[-1] != "n_parts":
        shape = "(x.shape[0], M, N)" if batched else "(M, N)"
        return [f"    {results[0]} = torch.empty({shape}, dtype=x.dtype, device=x.device)"]
    return ["    # one partial per row and tile of N: room for the smallest BLOCK_N among the configs",
            "    n_parts = triton.cdiv(N, min(config.kwargs[\"BLOCK_N\"] for config in MATMUL_CONFIGS))",
            *(f"    {part} = torch.empty(({'x.shape[0] * M' if batched else 'M'}, n_parts), dtype=torch.float32, "
              "device=x.device)" for part in results[:-1])]


def _with_row_kernel(task: FusionTask, k_row: int, rest: list[Step], sections: list[str], lines: list[str]) -> str:
    """The TRITON section: the matmul kernel, the following row op's kernel (or partials' combine), the wrapper."""
    if rest:
        by_name = {i.name: i for i in task.inputs}
        matmul_out = InputSpec("h", "activation", list(task.step_shapes()[k_row - 1]), task.dtype, {})
        row_task = replace(task, steps=rest, inputs=[matmul_out] + [by_name[n] for s in rest for n in s.inputs])
        if catalog.get(rest[0].op).family is Family.REDUCTION:
            rows = "x.shape[0] * M" if task.steps[0].op == "bmm" else "M"
            row_kernel, launch = _combine_kernel(row_task, f"{rest[0].op}_combine_kernel", rows)
        else:
            row_kernel, launch = _row_kernel(row_task, f"{rest[0].op}_kernel", "h")
        sections = [*sections, row_kernel]
        lines = [*lines, *launch]
    return "\n\n\n".join(sections) + "\n\n\n" + "\n".join([*lines, "    return out"]) + "\n"


def _autotuned(comment: list[str], configs: list[tuple]) -> list[str]:
    """MATMUL_CONFIGS (Hopper tiles on a GPU, one small tile in the interpreter) and the decorators."""
    config_lines = ",\n".join(
        f"    triton.Config({{'BLOCK_M': {bm}, 'BLOCK_N': {bn}, 'BLOCK_K': {bk}, 'GROUP_M': 8}}, num_warps={w}, "
        f"num_stages={st})" for bm, bn, bk, w, st in configs)
    interpreter = ("triton.Config({'BLOCK_M': 32, 'BLOCK_N': 32, 'BLOCK_K': 32, 'GROUP_M': 4}, num_warps=4, "
                   "num_stages=1)")
    return [*comment, "MATMUL_CONFIGS = [", config_lines, "] if DEVICE == \"cuda\" else [", f"    {interpreter},",
            "]", "", "", "@triton.autotune(configs=MATMUL_CONFIGS, key=[\"M\", \"N\", \"K\"])", "@triton.jit"]


def _persistent_matmul(task: FusionTask, k_row: int, args: list[str], strides: list[str], epilogue: list[str],
                       epilogue_inputs: list[InputSpec], rest: list[Step], results: list[str]) -> str:
    """One program per SM strides over the output tiles (of every batch); TMA loads, the epilogue fused."""
    root = task.steps[0]
    linear, batched = root.op.startswith("linear"), root.op == "bmm"
    if batched:  # 3-D descriptors: each batch's edges are zero-filled on their own
        descriptors = [line for name, rows, cols, stride in (("x", "M", "K", "stride_xm"), ("w", "K", "N", "stride_wk"))
                       for line in _wrap(f"{name}_desc = tl.make_tensor_descriptor(",
                                         [f"{name}_ptr", f"shape=[B, {rows}, {cols}]",
                                          f"strides=[stride_{name}b, {stride}, 1]",
                                          f"block_shape=[1, BLOCK_{rows}, BLOCK_{cols}]"], ")", width=116)]
        loads = ["# zero-filled past each batch's edges",
                 "a = x_desc.load([batch, pid_m * BLOCK_M, k * BLOCK_K]).reshape(BLOCK_M, BLOCK_K)",
                 "b = w_desc.load([batch, k * BLOCK_K, pid_n * BLOCK_N]).reshape(BLOCK_K, BLOCK_N)"]
    else:
        descriptors = [
            "x_desc = tl.make_tensor_descriptor(x_ptr, shape=[M, K], strides=[stride_xm, 1], "
            "block_shape=[BLOCK_M, BLOCK_K])",
            "w_desc = " + ("tl.make_tensor_descriptor(w_ptr, shape=[N, K], strides=[stride_wn, 1], "
                           "block_shape=[BLOCK_N, BLOCK_K])" if linear else
                           "tl.make_tensor_descriptor(w_ptr, shape=[K, N], strides=[stride_wk, 1], "
                           "block_shape=[BLOCK_K, BLOCK_N])")]
        loads = ["a = x_desc.load([pid_m * BLOCK_M, k * BLOCK_K])  # zero-filled past the edges",
                 "b = " + ("w_desc.load([pid_n * BLOCK_N, k * BLOCK_K]).T" if linear else
                           "w_desc.load([k * BLOCK_K, pid_n * BLOCK_N])")]
    body = [
        *descriptors,
        "tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)",
        f"for tile in tl.range(tl.program_id(0), {'B * ' if batched else ''}tiles_m * tiles_n, NUM_SMS, flatten=True, "
        "warp_specialize=True):",
        *(["    batch, in_batch = tile // (tiles_m * tiles_n), tile % (tiles_m * tiles_n)"] if batched else []),
        "    # grouped order: GROUP_M row-tiles share each column of w while it is in L2",
        *("    " + line for line in _grouped_order("in_batch" if batched else "tile")),
        "    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
        "    for k in range(0, tl.cdiv(K, BLOCK_K)):",
        *("        " + line for line in loads),
        *("        " + line for line in _DOT["16bit"]),
        "    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)",
        "    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)",
        "    mask = (rm[:, None] < M) & (rn[None, :] < N)",
        *("    " + line for line in epilogue)]
    fused = [step_label(s) for s in task.steps[:k_row]]
    shapes = "x [B, M, K], w [B, K, N]" if batched else f"x [M, K], {'w [N, K]' if linear else 'w [K, N]'}"
    tiles = "every batch's [M, N] output tiles" if batched else "[M, N] output tiles"
    doc = (f'"""{" -> ".join(fused)}: {shapes}; persistent over {tiles}.\n\n'
           "    NUM_SMS programs stride over the tiles in grouped order; the k-loop's TMA loads and tl.dot (wgmma,\n"
           "    fp32 accumulator) are software-pipelined, the tile loop marked for warp specialization (a request\n"
           "    Triton honours where the target supports it); the epilogue is fused;\n"
           f'    {_ENDING[results[-1] == "n_parts"]}.\n    """')
    kernel = "\n".join([
        *_autotuned([f"{PERSISTENT_MARK} one program per SM, TMA loads, tl.dot. On a GPU the tiles are",
                     "# autotuned for Hopper; Triton's interpreter (no autotuner) runs one small tile."],
                    _PERSISTENT_CONFIGS),
        *_kernel_def("fused_kernel_triton", [*args, *(["B"] if batched else []), "M", "N", "K", *strides],
                     ["NUM_SMS", "DOT_FP32", "BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"]),
        f"    {doc}",
        *("    " + line for line in body),
    ])
    launch_args = ["x", "w", *(["bias"] if root.op == "linear_bias" else []), *[i.name for i in epilogue_inputs],
                   *results, *(["B"] if batched else []), "M", "N", "K",
                   *(["x.stride(0)", "x.stride(1)", "w.stride(0)", "w.stride(1)"] if batched else
                     ["x.stride(0)", "w.stride(0)"]),
                   "NUM_SMS=num_sms", "DOT_FP32=not x.is_cuda"]
    if batched:
        operands = ["    B, M, K = x.shape",
                    "    N = w.shape[2]",
                    "    # every batch's rows as one 2-D operand for the TMA helper (a padded copy keeps the 3-D view)",
                    "    x = _tma_operand(x.reshape(B * M, K)).view(B, M, K)",
                    "    w = _tma_operand(w.reshape(B * K, N)).view(B, K, N)"]
    else:
        operands = ["    x, w = _tma_operand(x), _tma_operand(w)",
                    "    M, K = x.shape",
                    f"    N = {'w.shape[0]' if linear else 'w.shape[1]'}"]
    lines = [f"def fused_kernel_triton_wrapper({', '.join(task.arg_names)}):", *_contiguous(task),
             *operands,
             *_matmul_outputs(task, results, batched=batched),
             "    num_sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4",
             f"    grid = lambda meta: (min(num_sms, {'B * ' if batched else ''}triton.cdiv(M, meta[\"BLOCK_M\"]) * "
             "triton.cdiv(N, meta[\"BLOCK_N\"])), )",
             "    # device-side TMA descriptors live in a little global scratch memory Triton asks this allocator for",
             "    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, "
             "device=x.device))",
             *_launch("fused_kernel_triton[grid]", launch_args)]
    return _with_row_kernel(task, k_row, rest, [kernel, _TMA_HELPERS.rstrip()], lines)


# -- two reductions ----------------------------------------------------------------------------------
# [B, M, N] -> reduce N -> [B, M] -> reduce M -> [B]: a program per [BLOCK_M, BLOCK_N] tile of one batch's
# rows; the tile's rows are reduced over N, the middle pointwise ops applied, and the second reduction's state
# taken over the tile's rows (combined across tiles, where a program walks several, as _RUNNING says).

# Tiles of 2048 values, one a program, on 2 warps, loads with evict_first in a loop of one stage, a batch's tiles
# neighbours in launch order (one grid dimension: a second would cap B at 65535). A/B on the H100 over the 46
# two_reductions seeds of 0..499 (benchmarks/results/ab_h100/round8_two_reductions_*.txt): the generated files
# 1.064x faster in geometric mean than slices walked by 4 programs an SM over 8192-value tiles, faster on 44 (up
# to 1.30x), slower on two compute-bound chains (0.97x, 0.91x). Step by step: one tile a program 1.00x (8192-value
# tiles), its launch order 1.02x, 4096-value tiles 1.06x, 2048 1.07x, 1024 1.06x. Autotuning 2 or 4 warps read
# 1.088x in the A/B, but the autotuner's dispatch is host time that a wrapper of two launches cannot spare on a
# slow host: timed by the bench, the GPU waited on it (seed 24 0.83x eager).
TWO_REDUCTION_TILE, TWO_REDUCTION_MAX_SPLITS, TWO_REDUCTION_WARPS = 2048, 1024, 2


def _two_reductions(task: FusionTask) -> str:
    """[B, M, N]: reduce over N, then over M. A program per slice of one batch's rows (one tile unless M is long)
    stores the second reduction's state; a combine kernel merges each batch's slices and applies the later ops."""
    by_name = {i.name: i for i in task.inputs}
    first_k, second_k = [k for k, s in enumerate(task.steps) if catalog.get(s.op).family is Family.REDUCTION]
    first, second = task.steps[first_k], task.steps[second_k]
    tile = Layout({"col": "cols[None, :]", "row": "batch * n_rows + rows[:, None]",
                   "full": "batch * n_rows * n_cols + rows[:, None] * n_cols + cols[None, :]"},
                  vectors={"col": ("cols", "cols < n_cols", "[None, :]")})
    per_row = Layout({"col": "rows", "row": "batch", "full": "batch * n_rows + rows"}, frozenset({"row"}), "row_mask")
    init, update, state = _RUNNING[second.op]
    parts = _PARTIALS[second.op][0]

    body = ["program = tl.program_id(0)",
            "batch = (program // n_splits).to(tl.int64)",
            "split = program % n_splits",
            "cols = tl.arange(0, BLOCK_N)",
            *[line.format(**second.params) for line in init],
            "row_end = tl.minimum((split + 1) * rows_per_split, n_rows)",
            "for start in tl.range(split * rows_per_split, row_end, BLOCK_M, num_stages=1):",
            "    rows = start + tl.arange(0, BLOCK_M)",
            "    row_mask = rows < row_end",
            "    mask = row_mask[:, None] & (cols[None, :] < n_cols)",
            *_wrap("    h = tl.load(", ["x_ptr + " + tile.index["full"], "mask=mask", "other=0.0",
                                      "eviction_policy='evict_first'"], ").to(tl.float32)")]
    loop = []
    for k, step in enumerate(task.steps[:first_k], start=1):
        loop += _emit_pointwise(k, step, by_name, tile, task.dtype)
    loop.append(f"# {first_k + 1}. {step_label(first)} (over N): {catalog.get(first.op).doc}")
    loop += _reduction(first, "n_cols", tile=True)
    for k, step in enumerate(task.steps[first_k + 1:second_k], start=first_k + 2):
        loop += _emit_pointwise(k, step, by_name, per_row, task.dtype)
    loop.append(f"# {second_k + 1}. {step_label(second)} (over M): this slice's running state")
    loop += [line.format(mask="row_mask", axis=0, **second.params) for line in update]
    body += ["    " + line for line in loop]
    body += [f"tl.store({part}_ptr + batch * n_splits + split, {state[part]})" for part, _ in parts]

    head = replace(task, steps=task.steps[:second_k + 1],
                   inputs=[task.inputs[0], *(by_name[n] for s in task.steps[:second_k + 1] for n in s.inputs)])
    doc = (f'"""{" -> ".join(step_label(s) for s in head.steps)}; x [B, M, N], a program per batch and slice of '
           f'rows.\n\n    Walks the [BLOCK_M, BLOCK_N] tiles of its rows_per_split rows (one tile unless M is long); '
           f'stores the\n    slice\'s fp32 state of the second reduction.\n    """')
    kernel = "\n".join([
        "@triton.jit",
        *_kernel_def("fused_kernel_triton", [*_kernel_args(head), *(f"{part}_ptr" for part, _ in parts), "n_rows",
                                             "n_cols", "rows_per_split", "n_splits"],
                     ["BLOCK_M", "BLOCK_N"]),
        f"    {doc}",
        *("    " + line for line in body),
    ])
    combine, launch = _split_combine_kernel(task, second_k)
    keep = second.params["keepdim"]
    launch_args = ["x", *[i.name for i in head.inputs[1:]], *(part for part, _ in parts), "n_rows", "n_cols",
                   "rows_per_split", "n_splits", "BLOCK_M=BLOCK_M", "BLOCK_N=BLOCK_N",
                   f"num_warps={TWO_REDUCTION_WARPS}"]
    wrapper = "\n".join([
        f"def fused_kernel_triton_wrapper({', '.join(task.arg_names)}):",
        *_contiguous(task),
        "    n_batch, n_rows, n_cols = x.shape",
        "    BLOCK_N = triton.next_power_of_2(n_cols)",
        f"    BLOCK_M = max(1, min(triton.next_power_of_2(n_rows), {TWO_REDUCTION_TILE} // BLOCK_N))",
        "    # a program per tile, a batch's tiles neighbours in launch order; past "
        f"{TWO_REDUCTION_MAX_SPLITS} tiles a batch, each walks several",
        f"    rows_per_split = triton.cdiv(triton.cdiv(n_rows, BLOCK_M), {TWO_REDUCTION_MAX_SPLITS}) * BLOCK_M",
        "    n_splits = triton.cdiv(n_rows, rows_per_split)",
        *(f"    {part} = torch.empty((n_batch, n_splits), dtype=torch.float32, device=x.device)" for part, _ in parts),
        *_launch("fused_kernel_triton[(n_batch * n_splits,)]", launch_args),
        f"    out = torch.empty({'(n_batch, 1)' if keep else '(n_batch,)'}, dtype=x.dtype, device=x.device)",
        *launch,
        "    return out",
    ])
    return kernel + "\n\n\n" + combine + "\n\n\n" + wrapper + "\n"


def _split_combine_kernel(task: FusionTask, second_k: int) -> tuple[str, list[str]]:
    """Merge each batch's slice states of the second reduction, then the later (per-batch) ops."""
    by_name = {i.name: i for i in task.inputs}
    second, later = task.steps[second_k], task.steps[second_k + 1:]
    parts = _PARTIALS[second.op][0]
    operands = [by_name[n] for s in later for n in s.inputs]
    body = ["batch = tl.program_id(0).to(tl.int64)", "splits = tl.arange(0, BLOCK_S)",
            *(f"{part} = tl.load({part}_ptr + batch * n_splits + splits, mask=splits < n_splits, other={identity})"
              for part, identity in parts),
            f"# {second_k + 1}. {step_label(second)} (over M): {catalog.get(second.op).doc}",
            *(line.format(**second.params) for line in _COMBINE[second.op])]
    for k, step in enumerate(later, start=second_k + 2):
        body += _emit_pointwise(k, step, by_name, Layout({}, frozenset()), task.dtype)
    body.append("tl.store(out_ptr + batch, h.to(out_ptr.dtype.element_ty))")
    name = f"{second.op}_combine_kernel"
    doc = (f'"""{" -> ".join(step_label(s) for s in [second, *later])}: one program per batch.\n\n'
           "    Merges the batch's n_splits slice states (fp32), applies the later ops, one cast on store.\n"
           '    """')
    args = [f"{i.name}_ptr" if i.dtype != SCALAR_DTYPE else i.name for i in operands]
    sizes, size_args = _read_sizes(body, [("n_splits", "n_splits"), ("n_reduced", "n_rows")])
    kernel = "\n".join([
        "@triton.jit",
        *_kernel_def(name, [*(f"{part}_ptr" for part, _ in parts), *args, "out_ptr", *sizes], ["BLOCK_S"]),
        f"    {doc}",
        *("    " + line for line in body),
    ])
    launch = _launch(f"{name}[(n_batch,)]", [*(part for part, _ in parts), *(i.name for i in operands), "out",
                                             *size_args, "BLOCK_S=triton.next_power_of_2(n_splits)"])
    return kernel, launch


def _longest_row(task: FusionTask, step: Step) -> int:
    """The longest row the row op sees at any of the task's shapes."""
    lengths = []
    for dims in task.shapes["test"] + task.shapes["bench"]:
        length = dims["N"]
        if step.op == "group_norm":
            groups = step.params["groups"]
            length = dims["N"] // groups if len(task.inputs[0].shape) == 2 else dims["M"] // groups * dims["N"]
        lengths.append(length)
    return max(lengths)


def _draw(spec: InputSpec, dims_name: str) -> str:
    """Plain-torch code drawing one input like tasks.draw (standalone files need no fusionforge)."""
    init = spec.init
    sizes = [f"{dims_name}[{d!r}]" if isinstance(d, str) else str(d) for d in spec.shape]
    shape = "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"
    if init["dist"] == "normal":
        value = f"torch.randn({shape}, device=DEVICE)"
        if "clip" in init:
            value += f".clamp(-{init['clip']}, {init['clip']})"
        if "fan_in" in init:
            value += f" * ({init['std']} / {dims_name}[{init['fan_in']!r}] ** 0.5)"
        elif init["std"] != 1.0:
            value += f" * {init['std']}"
        if init["mean"]:
            value += f" + {init['mean']}"
    elif init["dist"] == "uniform":
        value = f"torch.rand({shape}, device=DEVICE) * {init['high'] - init['low']} + {init['low']}"
    else:
        magnitude = f"(torch.rand({shape}, device=DEVICE) * {init['high'] - init['low']} + {init['low']})"
        value = f"{magnitude} * (torch.randint(0, 2, {shape}, device=DEVICE) * 2 - 1)"
    if spec.dtype == SCALAR_DTYPE:
        return f"    {spec.name} = float({value})"
    return f"    {spec.name} = ({value}).to(torch.{spec.dtype})"


def _get_inputs(task: FusionTask) -> str:
    bench, test = task.shapes["bench"][0], task.shapes["test"][0]
    return "\n".join([
        "def get_inputs():",
        '    """One call\'s arguments, drawn like the task\'s: the bench shape on a GPU, a test shape on the CPU."""',
        f"    dims = {bench!r} if DEVICE == \"cuda\" else {test!r}",
        *(_draw(spec, "dims") for spec in task.inputs),
        f"    return [{', '.join(task.arg_names)}]",
    ])
