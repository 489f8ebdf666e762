"""The row plan's kernel: pointwise steps, one reduction, normalization or scan over rows, pointwise steps.

One emitter for every way of walking the rows (``Rows.form``), the looped ones a flag on the same steps:

* ``registers``: a row a program, held in BLOCK_N lanes (the next power of two, masked); the only form of a
  scan (the catalog's Triton form over the row);
* ``short_rows``: a reduction over rows under 2 KB reads [ROWS, BLOCK_N] tiles of several rows;
* ``slices``: a row too long for registers walked in CHUNK-wide slices carrying the reduction's running state:
  one pass for a reduction, two for a normalization (its statistic, then normalize and store);
* ``group_tiles``: a 3D group norm's group ([C / G, N] values) walked in [C_BLOCK, BLOCK_N] tiles of channels
  and positions, so per-channel operands load as a vector per tile.

Group norm's rows are one group of one sample: [M, N] -> [M * G, N / G]; [B, M, N] -> [B * G, (M / G) * N],
contiguous in memory. The same kernel serves a normalization after a matmul, over its product, and a chain that
starts with a gather: each program loads its rows' ids and reads those rows of a lookup's table, or loads its
indices and reads x where they point; or with fp8 values, read as such and scaled in fp32 (``_first_load``).
"""

from __future__ import annotations

from fusionforge.codegen import tuning
from fusionforge.codegen.layout import Layout, dequantized, operand_loads, per_row, pointwise_steps
from fusionforge.codegen.plan import Plan, PlanStep, Rows, kernel_args
from fusionforge.codegen.reductions import NORMALIZATIONS, REDUCTIONS, Phrases
from fusionforge.codegen.source import Code, Kernel
from fusionforge.codegen.wrapper import Section, chain_text, shape_text, wrapper
from fusionforge.ops import FP8_DTYPE, Family
from fusionforge.tasks import InputSpec, row_length

AMAX_DOC = "the tensor's max |h_ij|, folded in by atomic maxes (the next kernel scales by it)"
EVICT_FIRST = ", eviction_policy='evict_first'"
READ_ONCE = f"# a reduction reads its rows once: evict_first ({tuning.see('evict-first')})"


def emit(plan: Plan) -> Section:
    source = "weight" if plan.steps[0].op.name == "embedding" else "x"
    steps, inputs = list(plan.steps), list(plan.task.inputs)
    code = wrapper(plan)
    kernels = []
    if plan.rows.step.op.name == "quantize_fp8_tensor":  # the tensor's amax first: a kernel of its own
        bench_row = max(row_length(plan.rows.step.step, plan.rank, dims) for dims in plan.task.shapes["bench"])
        if bench_row < tuning.AMAX_TILE:  # many short rows: programs striding over tiles of them
            kernel, launch = strided_amax_kernel(plan, plan.rows, steps, inputs)
        else:  # fewer, longer rows: a program a row (walked in slices where registers cannot hold it)
            kernel, launch, _ = row_kernel(plan, plan.rows, steps, "fused_kernel_triton_amax", source, inputs,
                                           tensor_amax=True)
        kernels.append(kernel)
        code.extend(launch)
    kernel, launch, host = row_kernel(plan, plan.rows, steps, "fused_kernel_triton", source, inputs)
    if kernels:  # the second kernel of two: what the first wrote (tuning helpers, the row's sizes) only once
        if kernels[0].tuning:
            kernel.tuning = [line for line in kernel.tuning if line.startswith("@")]
        written = {line.split("  #")[0] for line in code.lines if " = " in line}
        launch.lines = [line for line in launch.lines if line.split("  #")[0] not in written]
    code.extend(launch)
    code("return out, scales" if plan.task.quantizer else "return out")
    return Section([*kernels, kernel], host, code)


def geometry(rows: Rows) -> tuple[str, Layout, str]:
    """(the row length in the wrapper, in terms of ``x``; where operands live for the values of a row held
    whole; the rows in words)."""
    step, rank = rows.step, rows.rank
    chan, pos = rows.dims
    if step.op.name == "group_norm":
        groups = step.params["groups"]
        if rank == 2:
            return (f"x.shape[-1] // {groups}",
                    Layout({"col": f"(row % {groups}) * row_len + cols", "row": f"row // {groups}",
                            "full": "row * row_len + cols", "chan": f"(row % {groups}) * row_len + cols"},
                           frozenset({"row"})),
                    f"rows are one group of {groups} per sample: [M, N] -> [M * {groups}, N / {groups}]")
        return (f"(x.shape[1] // {groups}) * x.shape[-1]",
                Layout({"col": "cols % n_cols",
                        "row": f"(row // {groups}) * n_chan + (row % {groups}) * (n_chan // {groups}) + cols // n_cols",
                        "full": "row * row_len + cols",
                        "chan": f"(row % {groups}) * (n_chan // {groups}) + cols // n_cols"}),
                f"rows are one group of {groups} per sample: [B, {chan}, {pos}] -> [B * {groups}, ({chan} / {groups}) "
                f"* {pos}]")
    if step.op.family is Family.SPATIAL:
        return ("x.shape[-2] * x.shape[-1]", Layout({"full": "row * row_len + cols"}),
                "one plane of H x W values (a sample's channel) per program")
    chan = "cols" if rank == 2 else "row % n_chan"
    return ("x.shape[-1]",
            Layout({"col": "cols", "row": "row", "full": "row * row_len + cols", "chan": chan},
                   frozenset({"row", *({"chan"} if rank == 3 else ())})),
            "one row of the last dimension per program")


def _first_load(root: PlanStep | None, rows: Rows, layout: Layout, form: str, hint: str) -> list[str]:
    """The lines loading the chain's first values into ``h`` at the kernel's rows and columns: ``x`` at the layout's
    full index; fp8 values times their scale; a lookup's table at its ids' rows; for a gather, its indices first,
    then ``x`` where they point (a 2D group norm's row is one group of a row of picks)."""
    if root is None:
        return [f"h = tl.load(x_ptr + {layout.index['full']}, mask=mask, other=0.0{hint}).to(tl.float32)"]
    if root.op.family is Family.FP8:
        return dequantized(root, layout, hint)
    groups = rows.step.params["groups"] if rows.step.op.name == "group_norm" else None
    if root.op.name == "embedding":
        index = ("tokens[:, None] * row_len + cols[None, :]" if form == "short_rows"
                 else f"token * n_cols + (row % {groups}) * row_len + cols" if groups else "token * row_len + cols")
        return [f"h = tl.load(weight_ptr + {index}, mask=mask, other=0.0{hint}).to(tl.float32)"]
    if root.op.name == "gather":
        picks = f"picked = tl.load(index_ptr + {layout.index['full']}, mask=mask, other=0)"
    elif form == "short_rows":
        index, mask, broadcast = layout.vectors["col"]
        picks = f"picked = tl.load(index_ptr + {index}, mask={mask}, other=0){broadcast}"
    else:
        picks = f"picked = tl.load(index_ptr + {layout.index['col']}, mask=mask, other=0)"
    sample = "rows[:, None]" if form == "short_rows" else f"(row // {groups})" if groups else "row"
    return [root.comment("the columns of x the program's values come from"), picks,
            f"h = tl.load(x_ptr + {sample} * n_picked_from + picked, mask=mask, other=0.0{hint}).to(tl.float32)"]


def _token(rows: Rows) -> str:
    """The line loading the id of the table row a program's row reads (a 2D group norm's row is one group of
    one id's row)."""
    groups = rows.step.params["groups"] if rows.step.op.name == "group_norm" else None
    return f"token = tl.load(ids_ptr + {f'row // {groups}' if groups else 'row'})"


def _short_rows(rank: int) -> Layout:
    col = ("cols", "cols < row_len", "[None, :]")
    chan = col if rank == 2 else ("rows % n_chan", "row_mask", "[:, None]")
    return Layout({"full": "rows[:, None] * row_len + cols[None, :]"},
                  vectors={"col": col, "row": ("rows", "row_mask", "[:, None]"), "chan": chan})


def _group_tiles(groups: int) -> Layout:
    chans = f"(row % {groups}) * group_chans + chans"
    return Layout({"full": "row * row_len + chans[:, None] * n_cols + pos[None, :]"},
                  vectors={"col": ("pos", "pos < n_cols", "[None, :]"),
                           "chan": (chans, "chans < group_chans", "[:, None]"),
                           "row": (f"(row // {groups}) * n_chan + {chans}", "chans < group_chans", "[:, None]")})


def row_kernel(plan: Plan, rows: Rows, steps: list[PlanStep], name: str, source: str,
               inputs: list[InputSpec], tensor_amax: bool = False) -> tuple[Kernel, Code, list[str]]:
    """The kernel walking ``rows`` through ``steps`` (pointwise, the row op, pointwise) over ``source`` (the
    wrapper's ``x``, a matmul's product ``h``, or the ``weight`` table an embedding lookup starting ``steps``
    reads; a gather starting them reads ``x`` at its ``index``); ``inputs``: the kernel's, ``source`` first (after
    the ids of a lookup). Returns the kernel, the wrapper lines that allocate ``out`` and launch it, and host-side
    helpers it needs. ``tensor_amax``: instead, the first kernel of a per-tensor fp8 quantization, each row's amax
    folded into ``amax`` by an atomic max."""
    step, form, dtype = rows.step, rows.form, plan.dtype
    root = steps[0] if steps[0].op.family in (Family.GATHER, Family.FP8) else None
    lookup = root if root and root.op.name == "embedding" else None
    picks = root if root and root.op.family is Family.GATHER and not lookup else None  # a gather's indices
    before = [s for s in steps if s.index < step.index and s is not root]
    after = [s for s in steps if s.index > step.index]
    row_len, layout, in_words = geometry(rows)
    row_len = row_len.replace("x.", "index." if picks else f"{source}.")
    pointers = ["ids_ptr", "weight_ptr"] if lookup else ["x_ptr"]
    reduction = REDUCTIONS["amax"] if tensor_amax else REDUCTIONS.get(step.op.name)
    norm = None if tensor_amax else NORMALIZATIONS.get(step.op.name)
    quantizer = step.op.family is Family.QUANTIZE
    store_reduced = ("tl.atomic_max(amax_ptr, h)  # amax >= 0: a float max is exact in any order" if tensor_amax
                     else "tl.store(out_ptr + row, h.to(out_ptr.dtype.element_ty))")
    body = Code()
    constexprs = {"registers": ["BLOCK_N"], "short_rows": ["ROWS", "BLOCK_N"], "slices": ["CHUNK"],
                  "group_tiles": ["TILE", "C_BLOCK", "BLOCK_N"]}[form]
    hint = EVICT_FIRST if step.reduces else ""

    if form == "short_rows":
        layout = _short_rows(rows.rank)
        body("rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)  # [ROWS]",
             "cols = tl.arange(0, BLOCK_N)  # [BLOCK_N]",
             "row_mask = rows < n_rows",
             "mask = row_mask[:, None] & (cols[None, :] < row_len)")
        if lookup:
            body(lookup.comment("the table rows of the program's ids"),
                 "tokens = tl.load(ids_ptr + rows, mask=row_mask, other=0)  # [ROWS]")
    elif form == "registers":
        body("row = tl.program_id(0).to(tl.int64)",
             "cols = tl.arange(0, BLOCK_N)  # [BLOCK_N]",
             "mask = cols < row_len")
    token = []  # a lookup's id of the program's row
    if lookup and form != "short_rows":
        token = [lookup.comment("the table row of the program's id"), _token(rows)]
    if not rows.looped:
        body(*token)
        if hint:
            body(READ_ONCE)
        body(*_first_load(root, rows, layout, form, hint))
        pointwise_steps(body, before, layout, dtype)
        body(step.comment(AMAX_DOC if tensor_amax else None))
        operand_loads(body, step, layout)
        if form == "short_rows":
            phrases = Phrases(reduction, "row_", step.params, axis=1, bcast="[:, None]", known={"count": "row_len"})
            body(*phrases(reduction.block), *phrases(reduction.finalize))
            pointwise_steps(body, after, per_row("rows", mask="row_mask"), dtype)
            body("tl.store(out_ptr + rows, h.to(out_ptr.dtype.element_ty), mask=row_mask)")
        elif reduction:
            phrases = Phrases(reduction, "row_", step.params, known={"count": "row_len"})
            body(*phrases(reduction.block), *phrases(reduction.finalize))
            pointwise_steps(body, after, per_row("row"), dtype)
            body(store_reduced)
        else:
            body(*(_normalize_in_registers(norm, step) if norm else _scan(step)))
            body(*(norm.keeps if norm else ()))
            pointwise_steps(body, after, layout, dtype)
            body("tl.store(out_ptr + row * row_len + cols, h.to(out_ptr.dtype.element_ty), mask=mask)")
    else:
        _walk(body, rows, before, after, reduction, norm, layout, dtype, token, root, store_reduced)

    sizes = [*([("n_rows", "n_rows")] if form == "short_rows" else []), ("row_len", "row_len"),
             ("n_cols", f"{'index' if picks else source}.shape[-1]"),
             *([("n_picked_from", "x.shape[-1]")] if picks else []),
             *([("n_chan", f"{source}.shape[1]")] if rows.rank >= 3 else [])]
    held = {"registers": f"{in_words}, held in registers (BLOCK_N lanes, masked)",
            "short_rows": f"ROWS {'planes' if step.op.family is Family.SPATIAL else 'rows of the last dimension'} "
                          "per program, a [ROWS, BLOCK_N] tile held in registers (masked)",
            "slices": f"{in_words}, walked in CHUNK-wide slices (rows too long for registers)",
            "group_tiles": f"{in_words}, walked in [C_BLOCK, BLOCK_N] tiles of its channels and positions (rows "
                           "too long for registers)"}[form]
    tuning_code = {"registers": tuning.row_warps(), "short_rows": tuning.row_warps(), "slices": [],
                   "group_tiles": tuning.group_tiles(step.params.get("groups", 1))}[form]
    outputs = ["amax_ptr"] if tensor_amax else ["out_ptr", "scales_ptr"] if quantizer else ["out_ptr"]
    if quantizer and norm and norm.statistic is None:
        outputs.append("amax_ptr")
    kernel = Kernel(name, [*pointers, *kernel_args(inputs[len(pointers):]), *outputs], sizes, constexprs,
                    [f"{chain_text(steps)}; "
                     + (f"{shape_text(inputs[0])} into {shape_text(inputs[1])}." if lookup
                        else f"{shape_text(inputs[0])} picked at {shape_text(inputs[1])}." if picks
                        else f"{shape_text(inputs[0])} scaled by {shape_text(inputs[1])}." if root
                        else f"x [{', '.join(str(d) for d in inputs[0].shape)}]."),
                     f"{held[0].upper()}{held[1:]}; fp32 math, "
                     + ("each row's amax folded into amax_ptr." if tensor_amax else "one cast on store.")],
                    body, tuning_code)
    host = ["\n".join(tuning.row_slices())] if form == "slices" and not tensor_amax else []
    return kernel, _launch(kernel, rows, step, name, source, row_len, inputs, root, tensor_amax), host


def strided_amax_kernel(plan: Plan, rows: Rows, steps: list[PlanStep], inputs: list[InputSpec]) -> tuple[Kernel, Code]:
    """The first kernel of a per-tensor fp8 quantization over rows held in registers: each program walks [ROWS,
    BLOCK_N] tiles of rows strided by the grid, keeps the largest |h| of each lane and folds them into ``amax``
    with one atomic max at its end (a few hundred in all, where one a row would queue on its single address)."""
    layout = _short_rows(rows.rank)
    body = Code()
    body("cols = tl.arange(0, BLOCK_N)  # [BLOCK_N]",
         "running = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)  # each lane's largest |h| so far",
         "for first in range(tl.program_id(0) * ROWS, n_rows, tl.num_programs(0) * ROWS):")
    body.level += 1
    body("rows = first + tl.arange(0, ROWS).to(tl.int64)  # [ROWS]",
         "row_mask = rows < n_rows",
         "mask = row_mask[:, None] & (cols[None, :] < row_len)",
         READ_ONCE, *_first_load(None, rows, layout, "short_rows", EVICT_FIRST))
    pointwise_steps(body, steps[:-1], layout, plan.dtype)
    body(rows.step.comment(AMAX_DOC), "running = tl.maximum(running, tl.where(mask, tl.abs(h), 0.0))")
    body.level -= 1
    body("tl.atomic_max(amax_ptr, tl.max(tl.max(running, axis=1), axis=0))  # amax >= 0: exact in any order")
    kernel = Kernel("fused_kernel_triton_amax", [*kernel_args(inputs), "amax_ptr"],
                    [("n_rows", "n_rows"), ("row_len", "row_len")], ["ROWS", "BLOCK_N"],
                    [f"{chain_text(steps)}: the amax of x [{', '.join(str(d) for d in inputs[0].shape)}].",
                     "The grid's programs stride over [ROWS, BLOCK_N] tiles of rows (masked), each lane keeping "
                     "its largest |h|; fp32 math, one atomic max a program."], body)
    code = Code(1)
    code("amax = torch.zeros(1, dtype=torch.float32, device=x.device)  # the atomic max's identity: |h| >= 0",
         "row_len = x.shape[-1]",
         "n_rows = x.numel() // row_len",
         "BLOCK_N = triton.next_power_of_2(row_len)",
         f"ROWS = max(1, {tuning.AMAX_TILE} // BLOCK_N)  # {tuning.see('fp8-amax')}",
         "num_sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 2",
         f"grid = (min(triton.cdiv(n_rows, ROWS), {tuning.AMAX_PROGRAMS_PER_SM} * num_sms),)")
    code.call("fused_kernel_triton_amax[grid](", [*(i.name for i in inputs), "amax", *kernel.size_args(),
                                                  "ROWS=ROWS", "BLOCK_N=BLOCK_N",
                                                  "num_warps=8 if ROWS * BLOCK_N <= 8192 else 16"])
    return kernel, code


def _scan(step: PlanStep) -> list[str]:
    """A scan of a row held whole, in the catalog's Triton form. Masked lanes follow the row's values, so what they
    hold never reaches a value of the row: each value scans only those before it."""
    return [f"h = {step.op.triton.format(x='h', **step.params)}"]


def _normalize_in_registers(norm, step: PlanStep) -> list[str]:
    """A normalization of a row held whole: the record's one-pass form, else its statistic's block, finalize
    and apply."""
    if norm.statistic is None:
        return [*norm.finalize, norm.apply.format(**step.params)]
    reduction = REDUCTIONS[norm.statistic]
    phrases = Phrases(reduction, "row_", step.params, known={"count": "row_len"})
    if norm.registers:
        return phrases(norm.registers)
    return [*phrases(reduction.block), *phrases(norm.finalize), *phrases([norm.apply])]


def _walk(body: Code, rows: Rows, before: list[PlanStep], after: list[PlanStep], reduction, norm,
          layout: Layout, dtype: str, token: list[str], root: PlanStep | None, store_reduced: str) -> None:
    """A row too long for registers: pass 1 folds each slice (or tile) into the row op's running state; a
    normalization's pass 2 walks the row again, normalizes and stores. ``token``: a lookup's lines loading the
    row's id; ``root``: a gather or an fp8 dequantization starting the chain (``_first_load``); ``store_reduced``:
    where a reduction's value goes."""
    step = rows.step
    statistic = reduction or (REDUCTIONS[norm.statistic] if norm.statistic else None)
    body("row = tl.program_id(0).to(tl.int64)", *token, step.comment(AMAX_DOC if reduction and
                                                                     step.op.family is Family.QUANTIZE else None))
    if rows.form == "group_tiles":
        groups = step.params["groups"]
        layout = _group_tiles(groups)
        body("tl.static_assert(C_BLOCK * BLOCK_N <= TILE)  # the heuristics keep a tile within its budget",
             f"group_chans = n_chan // {groups}",
             "n_blocks = tl.cdiv(n_cols, BLOCK_N)")
        loop = "for tile in range(0, tl.cdiv(group_chans, C_BLOCK) * n_blocks):"
        head = ["chans = (tile // n_blocks) * C_BLOCK + tl.arange(0, C_BLOCK)  # [C_BLOCK]",
                "pos = (tile % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]",
                "mask = (chans < group_chans)[:, None] & (pos < n_cols)[None, :]"]
        walk, axis = "tile by tile", None
    else:
        loop = "for start in range(0, row_len, CHUNK):"
        head = ["cols = start + tl.arange(0, CHUNK)  # [CHUNK]", "mask = cols < row_len"]
        walk, axis = "slice by slice", 0

    def open_walk(hint: str) -> None:
        body(loop)
        body.level += 1
        body(*head, *_first_load(root, rows, layout, rows.form, hint))
        pointwise_steps(body, before, layout, dtype)

    if statistic:
        phrases = Phrases(statistic, "run_", step.params, axis=axis)
        body(f"# {'' if reduction else 'pass 1: '}{statistic.what}, {walk}", *phrases.init())
        if reduction:
            body(READ_ONCE)
        open_walk(EVICT_FIRST if reduction else "")
        body(*phrases(statistic.update))
        body.level -= 1
        body(*phrases(reduction.finalize if reduction else norm.finalize))
    if reduction:
        pointwise_steps(body, after, per_row("row"), dtype)
        body(store_reduced)
        return
    if not statistic:
        body(*norm.finalize)
    body(*norm.keeps)
    affine = ", affine" if step.inputs else ""
    verb = "quantize" if step.op.family is Family.QUANTIZE else "normalize"
    body(f"# {'pass 2: ' if statistic else ''}{verb}{affine}, the ops after it, store")
    open_walk("")
    operand_loads(body, step, layout)
    body(*(phrases([norm.apply]) if statistic else [norm.apply.format(**step.params)]))
    pointwise_steps(body, after, layout, dtype)
    body(f"tl.store(out_ptr + {layout.index['full']}, h.to(out_ptr.dtype.element_ty), mask=mask)")
    body.level -= 1


def _launch(kernel: Kernel, rows: Rows, step: PlanStep, name: str, source: str, row_len: str,
            inputs: list[InputSpec], root: PlanStep | None, tensor_amax: bool = False) -> Code:
    """The wrapper lines allocating ``out`` (a value per row for a reduction, an index per row for an arg reduction,
    else the running value's shape: ``source``'s, a lookup's ids by the table's rows, a gather's rows of ``x`` by
    its picks; fp8 values and their scales for a quantizer, and the amax a per-tensor one's first kernel folds
    into) and launching the kernel, a program per row (per ROWS rows for short ones)."""
    code = Code(1)
    if tensor_amax:
        code("amax = torch.zeros(1, dtype=torch.float32, device=x.device)  # the atomic max's identity: |h| >= 0")
    elif step.op.family is Family.QUANTIZE:
        scales = "(*x.shape[:-1], 1)" if step.op.scales == "rows" else "(1,)"
        code(f"out = torch.empty_like(x, dtype=torch.{FP8_DTYPE})",
             f"scales = torch.empty({scales}, dtype=torch.float32, device=x.device)")
    lookup = root is not None and root.op.name == "embedding"
    picks = root is not None and root.op.family is Family.GATHER and not lookup
    fp8 = root is not None and root.op.family is Family.FP8  # the output takes the scale's dtype
    out_dtype = "scale.dtype" if fp8 else f"{source}.dtype"
    kept = 2 if step.op.family is Family.SPATIAL else 1  # the dims a reduction drops: H and W, or the last
    lead = "ids.shape" if lookup else f"{source}.shape[:-{kept}]"
    if tensor_amax or step.op.family is Family.QUANTIZE:
        pass
    elif step.reduces:
        shape = f"(*{lead}, {', '.join(['1'] * kept)})" if step.params["keepdim"] else lead
        dtype = f"torch.{step.op.out_dtype}" if step.op.out_dtype else out_dtype
        code(f"out = torch.empty({shape}, dtype={dtype}, device={source}.device)")
    elif lookup or picks:
        width = f"{source}.shape[-1]" if lookup else "index.shape[-1]"
        code(f"out = torch.empty((*{lead}, {width}), dtype={source}.dtype, device={source}.device)")
    else:
        code(f"out = torch.empty_like({source}{', dtype=scale.dtype' if fp8 else ''})")
    code(f"row_len = {row_len}")
    outputs = {"amax_ptr": "amax", "out_ptr": "out", "scales_ptr": "scales"}
    args = [*(i.name for i in inputs), *(outputs[arg] for arg in kernel.params if arg in outputs), *kernel.size_args()]
    grid = f"{source}.numel() // row_len"
    if root:
        n_rows = "ids.numel()" if lookup else f"{source}.numel() // {source}.shape[-1]"
        grid = f"{n_rows} * {step.params['groups']}" if step.op.name == "group_norm" else n_rows
    if rows.form in ("registers", "short_rows"):
        code(f"BLOCK_N = triton.next_power_of_2(row_len)  # warps: {tuning.see('row-warps')}")
        args.append("BLOCK_N=BLOCK_N")
    if rows.form == "short_rows":
        code(f"n_rows = {grid}",
             f"ROWS = max(1, {tuning.SHORT_ROW_TILE} // BLOCK_N)  # rows under {tuning.SHORT_ROW_BYTES} bytes: "
             f"{tuning.see('short-rows')}")
        args.insert(-1, "ROWS=ROWS")
        grid = "triton.cdiv(n_rows, ROWS)"
    elif rows.form == "slices":
        code("CHUNK, warps = row_slices(row_len)")
        args += ["CHUNK=CHUNK", "num_warps=warps"]
    code.call(f"{name}[({grid},)](", args)
    return code
