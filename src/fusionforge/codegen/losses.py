"""The loss plan: pointwise steps, then a loss over each row of the last dimension; a mean loss sums the rows.

A program takes ROWS rows and walks them in [ROWS, CHUNK] tiles (one row of a long vocabulary, many short rows),
applies the pointwise steps and folds each tile into the loss's running state per row (fp32), then finalizes
each row's loss:

* ``cross_entropy``: the row's logsumexp (online: the max and the rescaled sum of exp(x - max)) and the target's
  logit, picked out of the tile that holds it; loss = logsumexp - x[target];
* ``kl_div``: the logsumexp of h, and the sums of t, t h and t log t (0 where t is 0, as xlogy);
  loss = sum t log t - sum t h + logsumexp * sum t, since log_softmax(h) = h - logsumexp;
* ``mse_loss``: the sum of (h - t)^2.

Losses are float32, whatever the inputs' dtype (as PyTorch gives them on upcast inputs, as training code computes
them). Per-row losses (cross_entropy, reduction none) are the output. For a mean, each program
stores the fp32 sum of its rows' losses, and a second kernel adds those partials in order and scales the total
(by 1 / rows, 1 / dim 0 for batchmean, 1 / values): the same answer every run, no atomics.
"""

from __future__ import annotations

from fusionforge.codegen import tuning
from fusionforge.codegen.layout import Layout, pointwise_steps
from fusionforge.codegen.plan import Plan, kernel_args
from fusionforge.codegen.rows import EVICT_FIRST, READ_ONCE
from fusionforge.codegen.source import Code, Kernel
from fusionforge.codegen.wrapper import Section, chain_text, wrapper

TILE = Layout({"full": "rows[:, None] * row_len + cols[None, :]"},
              vectors={"col": ("cols", "cols < row_len", "[None, :]"), "row": ("rows", "row_mask", "[:, None]")})
# What a mean divides the summed row losses by, in terms of the wrapper's x.
DIVISOR = {"cross_entropy": "n_rows", "kl_div": "x.shape[0]", "mse_loss": "x.numel()"}


def emit(plan: Plan) -> Section:
    loss = plan.steps[-1]
    before = list(plan.steps[:-1])
    mean = plan.task.output_shape == []
    name, target = loss.op.name, loss.inputs[0].name
    body = Code()
    body("rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)  # [ROWS]",
         "row_mask = rows < n_rows")
    zeros = "tl.zeros([ROWS], dtype=tl.float32)"
    if name == "cross_entropy":
        body(f"target = tl.load({target}_ptr + rows, mask=row_mask, other=0)  # each row's class",
             "run_max = tl.full([ROWS], float('-inf'), dtype=tl.float32)",
             f"run_sumexp = {zeros}", f"target_logit = {zeros}")
    elif name == "kl_div":
        body("run_max = tl.full([ROWS], float('-inf'), dtype=tl.float32)",
             *(f"{part} = {zeros}" for part in ("run_sumexp", "t_sum", "th_sum", "tlogt_sum")))
    else:
        body(f"sq_sum = {zeros}")
    body(READ_ONCE)
    with body.block("for start in range(0, row_len, CHUNK):"):
        body("cols = start + tl.arange(0, CHUNK)  # [CHUNK]",
             "mask = row_mask[:, None] & (cols < row_len)[None, :]",
             f"h = tl.load(x_ptr + {TILE.index['full']}, mask=mask, other=0.0{EVICT_FIRST}).to(tl.float32)")
        pointwise_steps(body, before, TILE, plan.dtype)
        body(loss.comment())
        if name != "cross_entropy":
            body(TILE.load(target, "full", var="t"))
        if name in ("cross_entropy", "kl_div"):
            body("# online logsumexp: the sum of exp(h - max) rescaled as the max grows",
                 "new_max = tl.maximum(run_max, tl.max(tl.where(mask, h, float('-inf')), axis=1))",
                 "run_sumexp = run_sumexp * tl.exp(run_max - new_max) + "
                 "tl.sum(tl.where(mask, tl.exp(h - new_max[:, None]), 0.0), axis=1)",
                 "run_max = new_max")
        if name == "cross_entropy":
            body("target_logit += tl.sum(tl.where(cols[None, :] == target[:, None], h, 0.0), axis=1)")
        elif name == "kl_div":
            body("t_sum += tl.sum(t, axis=1)",
                 "th_sum += tl.sum(tl.where(mask, t * h, 0.0), axis=1)",
                 "tlogt_sum += tl.sum(tl.where(t > 0.0, t * tl.log(t), 0.0), axis=1)")
        else:
            body("diff = tl.where(mask, h - t, 0.0)", "sq_sum += tl.sum(diff * diff, axis=1)")
    body({"cross_entropy": "h = run_max + tl.log(run_sumexp) - target_logit",
          "kl_div": "h = tlogt_sum - th_sum + (run_max + tl.log(run_sumexp)) * t_sum",
          "mse_loss": "h = sq_sum"}[name])
    if mean:
        body("tl.store(loss_ptr + tl.program_id(0), tl.sum(tl.where(row_mask, h, 0.0), axis=0))  # its rows' sum")
    else:
        body("tl.store(loss_ptr + rows, h, mask=row_mask)")
    what = "the sum of its rows' losses for the mean" if mean else "each row's loss"
    kernel = Kernel("fused_kernel_triton", ["x_ptr", *kernel_args(plan.task.inputs[1:]), "loss_ptr"],
                    [("n_rows", "n_rows"), ("row_len", "row_len")], ["ROWS", "CHUNK"],
                    [f"{chain_text(plan.steps)}; x [{', '.join(str(d) for d in plan.task.inputs[0].shape)}].",
                     f"ROWS rows of the last dimension a program, walked in [ROWS, CHUNK] tiles (fp32 math): {what}."],
                    body)
    kernels = [kernel]

    code = wrapper(plan)
    code("row_len = x.shape[-1]",
         "n_rows = x.numel() // row_len",
         f"ROWS, CHUNK, warps = loss_tiles(row_len)  # {tuning.see('loss-tiles')}")
    code("n_programs = triton.cdiv(n_rows, ROWS)")
    if mean:
        code("losses = torch.empty(n_programs, dtype=torch.float32, device=x.device)  # a partial sum per program")
    else:
        code("losses = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)")
    code.call("fused_kernel_triton[(n_programs,)](",
              ["x", *(i.name for i in plan.task.inputs[1:]), "losses", *kernel.size_args(), "ROWS=ROWS", "CHUNK=CHUNK",
               "num_warps=warps"])
    if mean:
        kernels.append(_mean_kernel())
        code("out = torch.empty((), dtype=torch.float32, device=x.device)")
        code.call("loss_mean_kernel[(1,)](", ["losses", "out", "n_programs", f"1.0 / {DIVISOR[name]}",
                                              f"BLOCK={tuning.LOSS_MEAN_BLOCK}", f"num_warps={tuning.LOSS_MEAN_WARPS}"])
        code("return out")
    else:
        code("return losses")
    return Section(kernels, ["\n".join(tuning.loss_tiles())], code)


def _mean_kernel() -> Kernel:
    body = Code()
    body("offsets = tl.arange(0, BLOCK)  # [BLOCK]",
         "total = tl.zeros([BLOCK], dtype=tl.float32)")
    with body.block("for start in range(0, n_partials, BLOCK):"):
        body("total += tl.load(loss_ptr + start + offsets, mask=start + offsets < n_partials, other=0.0)")
    body("tl.store(out_ptr, tl.sum(total, axis=0) * scale)")
    return Kernel("loss_mean_kernel", ["loss_ptr", "out_ptr", "n_partials", "scale"], [], ["BLOCK"],
                  ["The mean: the programs' fp32 partial sums added BLOCK lanes at a time in one program, times "
                   "scale."], body)
