"""Failure analysis: from what went wrong to a root cause and a fix specific to that cause.

Each function takes the facts the checker measured and returns a ``Failure``. Pattern tables map
error messages (Python, Triton's compiler and interpreter, CUDA) to causes a kernel writer can act on.
"""

from __future__ import annotations

import re

from fusionforge.verify.sandbox import PROGRESS_CAP
from fusionforge.verify.verdict import Failure, integer_error

# (regex on the error text, root cause, planned fix)
TRITON_PATTERNS = [
    (r"arange's range must be a power of 2|must be a power of 2",
     "Triton-specific: a block size (tl.arange range or tensor shape) is not a power of two.",
     "Round block sizes up with triton.next_power_of_2(n) and mask the tail lanes (mask = offsets < n)."),
    (r"must be (of type )?(a )?(tl\.)?constexpr|is not a constexpr|non-constexpr|must be a compile-time",
     "Triton-specific: a runtime value is used where a compile-time constant (tl.constexpr) is needed, "
     "e.g. as a shape in tl.arange or tl.zeros.",
     "Declare that argument as `NAME: tl.constexpr` (UPPER_CASE) and pass it as a keyword at launch."),
    (r"out of resource: shared memory|shared memory",
     "Triton-specific: the kernel needs more shared memory than a block may use (tiles too large or too "
     "many pipeline stages).",
     "Use smaller BLOCK sizes or fewer num_stages (e.g. 64x64x32, num_stages=3)."),
    (r"out of resource: registers|registers",
     "Triton-specific: the kernel needs more registers than available (tiles too large for num_warps).",
     "Reduce the tile size or raise num_warps; loop over the row in chunks instead of holding it whole."),
    (r"has no attribute '(\w+)'",
     "Triton-specific: the kernel calls a function Triton does not provide ({0}).",
     "Use a function from triton.language (tl.exp, tl.log, tl.sqrt, tl.sigmoid, tl.erf, tl.maximum...) "
     "or write it from those (e.g. tanh(x) = 2 * sigmoid(2x) - 1)."),
    (r"fp64|float64|unsupported.*dtype|dtype.*(not supported|unsupported)|Expected dtype|cannot be cast",
     "Triton-specific: a dtype the Triton function does not take (e.g. fp16 into a math function that "
     "needs fp32, or a mixed-dtype tl.dot).",
     "Upcast loaded values with .to(tl.float32) before the math, and cast once on store."),
    (r"incompatible|shape mismatch|Cannot broadcast|broadcast",
     "Triton-specific: block shapes do not broadcast together (e.g. a [BLOCK_M] vector against a "
     "[BLOCK_M, BLOCK_N] tile without [:, None]).",
     "Index vectors with [:, None] / [None, :] so every operand has the tile's shape."),
]
RUNTIME_PATTERNS = [
    (r"illegal memory access|out of bounds|index out of range|IndexError",
     "Illegal memory access: a load or store outside the tensors (a missing mask, a wrong stride or "
     "offset, or a grid larger than the data).",
     "Mask every tl.load / tl.store with offsets < n (and the row/col bounds for 2-D tiles); compute "
     "offsets from the tensors' real strides; size the grid with triton.cdiv."),
    (r"size mismatch|shape .* is invalid|must match the size|mat1 and mat2|shapes cannot be multiplied|"
     r"view size is not compatible|invalid for input of size",
     "Dimension mismatch: the code assumes a shape or layout the inputs do not have.",
     "Derive every size from the inputs' .shape (no hard-coded sizes); call .contiguous() before "
     "flattening; check the transposes of the matmul operands."),
    (r"CUDA out of memory|OutOfMemoryError",
     "The GPU ran out of memory (a huge allocation or a leak across calls).",
     "Allocate only the output (and small scratch buffers); free intermediates."),
    (r"CUDA error",
     "A CUDA error raised during the kernel (the message above is CUDA's).",
     "Run the kernel under compute-sanitizer or at small shapes with TRITON_INTERPRET=1 to find the "
     "faulting access; check masks and grid size."),
]


def _match(patterns, text: str, default: tuple[str, str]) -> tuple[str, str]:
    for pattern, cause, fix in patterns:
        m = re.search(pattern, text, re.IGNORECASE)
        if m:
            return cause.format(*m.groups()), fix
    return default


def format_problem(message: str, line: int | None, category: str, implementation: str) -> Failure:
    if category == "syntax":
        return Failure("syntax", implementation, message, f"Python syntax error at line {line}: {message}.",
                       f"Correct the syntax at line {line}; the whole file must parse before anything runs.", line)
    return Failure("format", implementation, message,
                   f"The file does not follow the seed format: {message}.",
                   "Follow the seed format: the docstring line, the PYTHON / TRITON / TEST sections in order, "
                   "fused_kernel_pytorch, a @triton.jit fused_kernel_triton, fused_kernel_triton_wrapper with the "
                   "same arguments, test_performance, get_inputs or TASK, then the main block.", line)


def import_failure(error: dict, line: int | None) -> Failure:
    message = f"{error['type']}: {error['message']}"
    if error["type"] in ("ModuleNotFoundError", "ImportError"):
        return Failure("import", "Both", message, f"The file imports something unavailable ({error['message']}).",
                       "Import only torch, triton (and the standard library); nothing else is installed.", line)
    return Failure("import", "Both", message, f"Module-level code raised while the file was imported: {message}.",
                   "Keep module-level code to imports, constants and definitions; move work into functions.", line)


def compile_core(message: str) -> tuple[str, str | None]:
    """Triton's CompilationError quotes the kernel source with a caret under the fault: (error, source line)."""
    lines = message.splitlines()
    for k, line in enumerate(lines):
        if line.strip() and set(line.strip()) == {"^"}:
            return "\n".join(lines[k + 1:]).strip(), lines[k - 1].strip() if k else None
    return message, None


def error_failure(error: dict, implementation: str, line: int | None, input_set: str, compile_error: bool) -> Failure:
    message = f"{error['type']}: {error['message']}".strip()
    text = " ".join([message, *error.get("causes", [])])
    if compile_error:
        core, source = compile_core(error["message"])
        if source:
            message = f"{error['type']}: {core} (at `{source}`)"
            text = " ".join([core, *error.get("causes", [])])
        cause, fix = _match(TRITON_PATTERNS, text, (
            f"Triton could not compile the kernel: {message}.",
            "Fix the kernel at the reported line; only triton.language operations on block-shaped values "
            "are allowed inside @triton.jit functions."))
        return Failure("compile", implementation, message, cause, fix, line, input_set)
    if implementation == "PyTorch":
        return Failure("runtime", "PyTorch", message, f"The PyTorch implementation raised: {message}.",
                       "Fix fused_kernel_pytorch so it computes the chain on the given inputs; it is the "
                       "readable reference of the pair.", line, input_set)
    cause, fix = _match(RUNTIME_PATTERNS, text, (
        f"The Triton wrapper raised while running: {message}.",
        "Fix the wrapper or kernel at the reported line; test at the task's odd test shapes."))
    return Failure("runtime", implementation, message, cause, fix, line, input_set)


def timeout_failure(seconds: float) -> Failure:
    return Failure("timeout", "Triton", f"did not finish: no call of the wrapper ended within {seconds:g} s (or all "
                   f"of them took past {PROGRESS_CAP * seconds:g} s); the process group was killed",
                   "A hang: an infinite loop (a while loop whose condition never changes, a loop bound that is "
                   "never reached), a deadlock, or a grid or loop far larger than the data.",
                   "Bound every loop by the data size (for start in range(0, n, BLOCK)); size the grid with "
                   "triton.cdiv(n, BLOCK); no spinning on values other programs write.")


def crash_failure(returncode: int, tail: str) -> Failure:
    import signal

    try:
        name = signal.Signals(-returncode).name if returncode < 0 else f"exit code {returncode}"
    except ValueError:
        name = f"signal {-returncode}"
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    message = f"the child process died ({name})" + (f": {last}" if last else "")
    return Failure("crash", "Triton", message,
                   f"The process crashed ({name}): an invalid host memory access (segfault), an abort, or a "
                   "call that ends the interpreter.",
                   "Remove raw pointer tricks (ctypes), os.abort/os._exit and sys.exit; access tensors only "
                   "through Triton loads and stores with masks.")


def shape_failure(got, expected, implementation: str, input_set: str) -> Failure:
    return Failure("shape", implementation, f"output shape {list(got)} != expected {list(expected)}",
                   f"Dimension mismatch: the output has shape {list(got)}, the task's output is {list(expected)} "
                   "(a transposed tile, a lost or extra dimension, or keepdim handled wrongly).",
                   f"Allocate the output as {list(expected)} and index it with the same layout; check keepdim "
                   "and the reduction axis.", None, input_set)


def dtype_failure(got: str, expected: str, implementation: str, input_set: str) -> Failure:
    return Failure("dtype", implementation, f"output dtype {got} != expected {expected}",
                   f"The output is {got} but the task's output is {expected}.",
                   f"Allocate the output with dtype {expected} (e.g. torch.empty_like(x)) and cast on store "
                   "with .to(out_ptr.dtype.element_ty).", None, input_set)


def outputs_failure(got: str, shapes: list, dtypes: list, implementation: str, input_set: str) -> Failure:
    """The function returned another number of outputs than the task's, or not a plain tuple of plain tensors
    (``got`` says what it returned)."""
    function = "fused_kernel_pytorch" if implementation == "PyTorch" else "fused_kernel_triton_wrapper"
    if not isinstance(dtypes, list):
        shapes, dtypes = [shapes], [dtypes]
    expected = ", ".join(f"[{', '.join(map(str, shape))}] {dtype}" for shape, dtype in zip(shapes, dtypes))
    what = "one plain torch.Tensor" if len(dtypes) == 1 else f"a tuple of {len(dtypes)} plain torch.Tensors"
    return Failure("dtype", implementation, f"{function} returned {got}, not {what} ({expected})",
                   f"The task's outputs are {expected}: {function} must return {what}, in that order.",
                   f"Return {what} ({expected}).", None, input_set)


def not_a_tensor(implementation: str, got: str | None, input_set: str) -> Failure:
    function = "fused_kernel_pytorch" if implementation == "PyTorch" else "fused_kernel_triton_wrapper"
    return Failure("dtype", implementation, f"{function} returned {got}, not a torch.Tensor",
                   f"{function} must return one plain torch.Tensor (not a subclass, a tuple or another object).",
                   "Return the output tensor itself.", None, input_set)


def nan_failure(count: int, unwritten: int, index, value, ref_value, implementation: str,
                input_set: str) -> Failure:
    if unwritten:
        return Failure("nan", implementation,
                       f"{unwritten} output elements were never written (still holding the poison value; first at "
                       f"index {index}, expected {ref_value:.6g})",
                       "Output left unwritten: the grid or the masks do not cover the whole output (or the wrapper "
                       "returned a buffer no kernel wrote). Fresh allocations are poisoned before the wrapper runs.",
                       "Launch enough programs to cover every output element (grid = triton.cdiv(n, BLOCK)), "
                       "and store to exactly the buffer you return.", None, input_set)
    return Failure("nan", implementation,
                   f"{count} NaN/Inf values where the reference is finite (first at index {index}: got {value}, "
                   f"expected {ref_value:.6g})",
                   "Non-finite values: a division by zero, log/sqrt of a negative or zero, exp overflow in low "
                   "precision, or masked lanes loaded with a bad `other=` value entering a reduction.",
                   "Compute in fp32, guard the division/log/sqrt as the reference does, use other=0 for sums and "
                   "other=-inf only for max, and mask before reducing.", None, input_set)


def inconsistent_pytorch_failure(rel: float, limit: float, dtype: str, input_set: str) -> Failure:
    """A file without a task whose PyTorch function computes one thing at float64 and another at its dtype."""
    return Failure("mismatch", "PyTorch",
                   f"fused_kernel_pytorch at {dtype} is {rel:.3g} (relative L2) from itself at float64, over "
                   f"{limit:.3g}, the most {dtype}'s rounding explains",
                   "A file without a TASK is checked against its own PyTorch function run in float64, within a "
                   "tolerance from that function's own error at the file's dtype: a function that computes "
                   "something else in float64 than at its dtype (a branch on the dtype, a step that loses the chain "
                   "in low precision) leaves neither the reference nor the tolerance meaningful.",
                   "Make fused_kernel_pytorch compute the same ops at every dtype (upcast where the chain needs "
                   "it), or give the file a TASK.", None, input_set)


def mismatch_failure(stats: dict, implementation: str, input_set: str, context: dict) -> Failure:
    """Values differ: say where, how much, and the likeliest cause given when it happened."""
    if stats.get("rule") == "fp8 step" and stats["unexplained_fraction"] > stats["unexplained_limit"]:
        rule = (f"{stats['unexplained_fraction']:.1%} of the float8 values are a neighbour of the reference's rounding "
                f"far from the boundary between the two, where no rounding of the chain carries a value (over "
                f"{stats['unexplained_limit']:.0%}: rounded toward zero, or biased)")
    elif stats.get("rule") == "fp8 step":
        rule = f"more than one float8 step ({stats['max_abs_tolerance']:.3g}) from the reference's rounding"
    elif stats["rel_err"] > stats["tolerance"]:
        rule = f"relative L2 error {stats['rel_err']:.3g} > tolerance {stats['tolerance']:.3g}"
    else:
        bound = stats.get("rounding_bound")
        rule = (f"over the max abs tolerance {stats['max_abs_tolerance']:.3g}"
                + (f" and over that element's rounding bound {bound:.3g}" if bound is not None else "")
                + f" (relative L2 error {stats['rel_err']:.3g} within {stats['tolerance']:.3g})")
    message = (f"max abs error {stats['max_abs_err']:.4g} at index {stats['max_abs_index']} (got "
               f"{stats['value']:.6g}, expected {stats['expected']:.6g}); {rule}")
    where = f"Numerical mismatch at index {stats['max_abs_index']}: got {stats['value']:.6g}, expected " \
            f"{stats['expected']:.6g} (relative L2 error {stats['rel_err']:.3g}, {stats['bad_fraction']:.1%} of " \
            f"elements off)."
    if integer_error(stats):
        message, where = integer_error(stats), f"Wrong integers: {integer_error(stats)}."
    if implementation == "PyTorch":
        return Failure("mismatch", "PyTorch", message,
                       f"The PyTorch implementation does not compute the task's chain. {where}",
                       "Make fused_kernel_pytorch compute exactly the ops of the task, in order, with the "
                       "task's parameters.", None, input_set)
    if context.get("config"):
        message = f"with {context['config']} forced: {message}"
        cause = (f"Wrong with an autotune config the tuner did not pick here ({context['config']}): on a GPU any "
                 f"config may win at any shape. The code assumes one config's block sizes somewhere (a pointer step, "
                 f"a mask, a grid or a buffer sized for another config), or, its programs run from the last id to "
                 f"the first, they read what other programs of the launch write. {where}")
        fix = ("Derive every step, mask, grid and buffer size from the config's meta-parameters (the kernel's "
               "constexprs, meta[...] in the grid); every config must compute the same function, and no program "
               "read what another program of its launch writes unless an atomic orders the two.")
    elif context.get("edge"):
        cause = (f"Right on typical inputs, wrong on inputs near the ends of their range (values the task's "
                 f"distribution can give): a running max or min started at a finite value instead of -inf or "
                 f"+inf, an exp taken before its max is subtracted, a clamp or a shortcut that holds only for "
                 f"typical values. {where}")
        fix = ("Start running extrema at -inf / +inf, subtract the running max before exp (online softmax), and "
               "keep every formula exact over the whole input range.")
    elif stats["rel_err"] <= stats["tolerance"] and stats["bad_fraction"] < 0.01:
        cause = (f"A few elements are off while the overall error is within the tolerance: a localized bug (an edge "
                 f"tile, a mask, a boundary row) or lower precision (16-bit or TF32 products, a shorter "
                 f"accumulation) that shows where the chain is sensitive. {where}")
        fix = ("Check the tiles and masks that cover the worst index; keep the task's precision (fp32 "
               "accumulation, input_precision=\"ieee\" for float32 dots).")
    elif stats.get("unwritten"):
        cause = (f"{stats['unwritten']} output elements were never written: they still hold the pattern the harness "
                 f"fills new allocations with. The grid or a mask leaves them out. {where}")
        fix = "Launch enough programs to cover every row and store every output element."
    elif context.get("refill"):
        cause = (f"A cached result: the same input tensors, refilled with new values, gave a wrong answer after the "
                 f"first values gave a right one. The wrapper answers from something keyed on its inputs (their "
                 f"addresses, shapes or a call count) instead of computing. {where}")
        fix = "Compute every call from the values its inputs hold now: no caches keyed on tensors, pointers or shapes."
    elif context.get("stale"):
        cause = (f"State kept between calls: the same shape passed on an earlier call and fails on a later one "
                 f"({context['stale']}); the wrapper returns a cached or stale result. {where}")
        fix = "Compute every call from its own inputs: no caches keyed on shapes, pointers or call counts."
    elif context.get("second_call") and context.get("reversed"):
        cause = (f"Wrong on the second call only, whose programs ran from the last id to the first (the CPU's "
                 f"interpreter runs them one at a time, in id order on the first call; a GPU runs them in any "
                 f"order, many at once; a launch that makes an atomic ran them side by side, in lockstep): programs "
                 f"read what other programs of the same launch write, a race on a GPU; or the result depends on "
                 f"memory the kernel did not write. {where}")
        fix = ("Let no program read what another program of the same launch writes (an atomic that picks one "
               "program to compute for the rest does not make the others wait): split the work into two launches "
               "(the first fills what the second reads), and write every output element in the kernel.")
    elif context.get("second_call"):
        cause = (f"Wrong on the second call only (after the PyTorch function ran and freed its output): the "
                 f"result depends on memory the kernel did not write. {where}")
        fix = "Write every output element in the kernel; never return memory that no kernel wrote this call."
    elif context.get("shape_dependent"):
        cause = (f"Correct at some shapes, wrong at {context['shape_dependent']}: a hard-coded size, a missing mask, "
                 f"or a block that does not cover the row. {where}")
        fix = "Take every size from the inputs' shapes; loop or mask so any row length and any row count work."
    elif context.get("dtype") == "float32" and stats["rel_err"] < 1e-2 and not integer_error(stats):
        cause = (f"Precision loss: a float32 task must keep float32 accuracy, but the error ({stats['rel_err']:.2g}) "
                 f"is that of TF32 or 16-bit arithmetic. {where}")
        fix = "Keep fp32 end to end: tl.dot(..., input_precision=\"ieee\") for float32 inputs, no casts to " \
              "fp16/bf16 inside the kernel."
    else:
        cause = f"Wrong values: the kernel computes a different function than the chain. {where}"
        fix = "Check each op against the chain (formula, constants, parameters, broadcast axis of vectors, " \
              "reduction axis) at the worst index; compare intermediates with TRITON_INTERPRET=1."
    return Failure("mismatch", implementation, message, cause, fix, None, input_set)


def cheat_failure(kind: str, detail: str, input_set: str | None) -> Failure:
    if kind == "no_launch":
        return Failure("cheat", "Triton", "no Triton kernel from this file was launched by the wrapper",
                       "The result is not computed by a Triton kernel of this file (no launch was seen).",
                       "Launch fused_kernel_triton (or the file's other @triton.jit kernels) from "
                       "fused_kernel_triton_wrapper and return what they write.", None, input_set)
    if kind == "torch_ops":
        return Failure("cheat", "Triton", f"the wrapper computes with PyTorch ops: {detail}",
                       f"PyTorch does (part of) the work: the wrapper dispatched compute ops ({detail}); only "
                       "allocation, view, copy and metadata ops are allowed outside the Triton kernels.",
                       "Move that computation into the Triton kernel (fuse it); the wrapper may only allocate, "
                       "reshape, make contiguous and launch.", None, input_set)
    if kind == "memoized":
        return Failure("cheat", "Triton", "a repeated call with the same inputs returned without launching a kernel",
                       "The wrapper memoizes: on a repeated call it returns a cached result instead of computing "
                       "(a benchmark would time the cache, not the kernel).",
                       "Compute every call: no caches keyed on shapes, pointers, contents or call counts.",
                       None, input_set)
    return Failure("cheat", "Triton", "the output is still correct when every Triton launch is skipped",
                   "The Triton kernels do not produce the result: with their launches skipped (ghost replay) the "
                   "wrapper still returns the right values, so it is computed elsewhere (NumPy, Python, a cache).",
                   "Compute the result inside the Triton kernel and return the buffer it writes.", None, input_set)


def reflection_failure(found: list[tuple[int, str]], implementation: str) -> Failure:
    """A file whose source reaches past public APIs (``reflection.reflective_access``): the first place, and how
    many more."""
    line, what = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return Failure("cheat", implementation, f"the file {what} at line {line}{more}: it reaches past public APIs into "
                   "the running program",
                   "The file reads the running program's internals (closures, globals, private attributes, objects "
                   "fetched by name, modules that do that, files, the process's arguments, a clock), the way to the "
                   "checker's own records of launches and problems or to telling a checked call from a timed one; "
                   "a fair kernel file needs none of them.",
                   "Use public torch and triton APIs only, and import only torch, triton, math, numpy, functools, "
                   "itertools, typing, collections, dataclasses, enum, numbers, abc, contextlib, warnings, random, "
                   "os, sys, time: no private or dunder attributes (beyond __name__, __init__), no getattr/eval/exec "
                   "by computed name, no files, sys.argv or clocks in the PYTHON and TRITON sections.", line)


# kind of provenance problem -> (what it means, the fix)
PROVENANCE = {
    "foreign": ("the wrapper's kernels or copies read memory this call neither received nor made: a tensor kept "
                "from an earlier call (a cache), built from host data, or made where the checker's trace cannot "
                "see (another thread, dispatch modes disabled)",
                "Allocate every buffer inside the wrapper on each call and pass the kernels only the inputs and those "
                "buffers; keep no tensors between calls."),
    "output_foreign": ("the returned tensor was not made during this call: it is kept from an earlier call (a "
                       "cache) or was made outside the checker's trace",
                       "Allocate the output in the wrapper on each call and return the buffer your kernel writes."),
    "untraced_write": ("memory was written outside the file's Triton launches and traced torch copies (through "
                       "NumPy or ctypes on the host, by a thread, or by a kernel launched around Triton's JIT), so "
                       "the values the kernels read did not come from the kernels",
                       "Write tensors only with the file's @triton.jit kernels (launched as kernel[grid](...)) and "
                       "plain torch copies in the wrapper."),
    "output_untraced_write": ("the returned tensor was changed after the last kernel or traced copy that wrote it: "
                              "its values were put there outside the file's Triton launches (NumPy, ctypes, a "
                              "thread, a kernel launched around Triton's JIT)",
                              "Return exactly what your kernel wrote; compute every value inside the kernel."),
    "output_not_kernel": ("no Triton launch of this call wrote the returned tensor, yet its values are right: they "
                          "come from somewhere else (a copy of data prepared on the host, a cache)",
                          "Have fused_kernel_triton write the output buffer you return."),
    "reinterpreted": ("the wrapper copies values through a view of another width (a float32 tensor read as "
                      "int16 halves): a conversion (float32 -> bfloat16 by truncation) done by PyTorch, not by the "
                      "kernels",
                      "Cast in the kernel: store h.to(out_ptr.dtype.element_ty) into an output of the task's dtype, "
                      "and copy tensors in the wrapper only at the dtype they hold."),
    "output_reinterpreted": ("the returned tensor views the kernel's values at another width (a float32 "
                             "output's upper halves returned as bfloat16): a conversion by truncation that no kernel "
                             "did, and the kernel wrote values of the wrong dtype",
                             "Cast in the kernel: store h.to(out_ptr.dtype.element_ty) into an output of the task's "
                             "dtype, and return that output."),
    "host_read": ("the wrapper reads tensor values into the host (.item(), .tolist(), .numpy(), a device-to-host "
                  "copy); a fair wrapper reads only shapes, strides and dtypes, so the values are being used to "
                  "compute or to decide on the host",
                  "Keep every value on the device and compute it in the kernel; decide from shapes only."),
    "host_data": ("the wrapper builds tensors from host data (torch.tensor, torch.from_numpy, torch.as_tensor, a "
                  "host-to-device copy): values computed on the host enter the result",
                  "Compute in the kernel; allocate buffers with torch.empty/zeros and let the kernels fill them."),
    "thread": ("the file starts a thread; work in another thread escapes the checker's trace of the wrapper",
               "Do all the work in the wrapper's own thread: launch the kernels and return."),
    "process": ("the file starts a process; work in another process escapes the checker",
                "Do all the work in the wrapper: launch the kernels and return."),
    "ctypes": ("the wrapper calls into ctypes: raw memory access or native calls around Triton and PyTorch",
               "Use only Triton kernels and torch allocation, view and copy operations."),
    "gc": ("the file scans the garbage collector's objects, the way a file finds tensors it was not given or "
           "the checker's own objects",
           "Use only the wrapper's arguments and the buffers it allocates."),
    "stack": ("the file walks the interpreter's stack (sys._getframe, inspect.currentframe, a traceback's or "
              "generator's frame, a tracer): the checker's own objects are on that stack, one f_back away",
              "Use no frames, tracers or profilers; the wrapper needs only its arguments."),
    "hook": ("the file adds an audit hook: it would run on the checker's own events, the frames of the checker's "
             "stack walks among them",
             "Add no audit hooks, tracers or profilers; the wrapper needs only its arguments."),
    "forged": ("the verdict's evidence did not come from the checker: the result file was written or changed by "
               "the file's own code (the checker's child seals what it writes with a key the file never sees)",
               "Leave the checker's files alone: compute the output in the kernel and return it."),
    "left_trace": ("the wrapper disables the dispatch modes the checker traces it with, so the work done there is "
                   "hidden",
                   "Remove the mode manipulation; do the work in the kernels."),
    "tampered": ("the file replaces functions of torch, Triton or the checker that the checker relies on to "
                 "see what the wrapper does",
                 "Leave torch, Triton and fusionforge as they are: import them, never assign to their attributes."),
    "settings": ("the file changes PyTorch's global settings (TF32, cuDNN, the attention backends, deterministic "
                 "algorithms), and with them the PyTorch it is checked and timed against: TF32 in PyTorch's own "
                 "answer loosens the tolerance, an eager baseline without cuDNN or flash attention runs slow",
                 "Leave torch.backends and torch's global settings as they are; set precision in the kernels "
                 "(tl.dot's input_precision)."),
    "value_dependent": ("the wrapper's host side depends on the inputs' values: two calls whose inputs differ only in "
                        "their values did different things on the host (other ops, other kernel arguments, another "
                        "grid). Only a host read of tensor values can cause that",
                        "Decide everything on the host from shapes, strides and dtypes only; compute with values "
                        "inside the kernels."),
}


def provenance_failure(problem: dict, input_set: str | None) -> Failure:
    """A rule of the ledger or the host guard broken: the output did not come from the file's kernels alone."""
    meaning, fix = PROVENANCE[problem["kind"]]
    return Failure("cheat", "Triton", problem["detail"], f"The result does not come from the file's Triton kernels "
                   f"alone: {meaning}.", fix, None, input_set)


def memory_failure(details: dict, message: str | None, line: int | None, input_set: str | None) -> Failure:
    """A load, store or atomic outside the tensors of its launch: found by the CPU interpreter's bounds
    checks (``message`` is theirs) or by compute-sanitizer on a GPU (``message`` is built here)."""
    access, kernel = details.get("access") or "access", details.get("kernel") or "a kernel"
    name = details.get("argument")
    valid = details.get("valid_offsets")
    if message is None:
        offset = details.get("offset")
        where = (f"{name} {'-' if offset < 0 else '+'} {abs(offset)}, outside the offsets {valid[0]}..{valid[1]} of "
                 "its tensor's memory"
                 if name is not None and offset is not None and valid else
                 f"address {details['address']:#x}, outside every allocation" if details.get("address") is not None
                 else "an address outside the tensors of the launch")
        message = (f"out-of-bounds {access} in {kernel}: {where} ({details.get('lanes_out_of_bounds')} or more "
                   "invalid accesses reported by compute-sanitizer)")
    pointer = name or "the pointer"
    cause = (f"Out-of-bounds memory: {kernel} {'reads' if access == 'load' else 'writes'} outside the memory of "
             f"{pointer}'s tensor. A GPU rarely faults on this (the access lands in other memory, so values come out "
             "wrong or right by luck, and a store corrupts other tensors): a missing or wrong mask, a grid larger than "
             "the data, or an offset or stride computed wrongly.")
    op = "tl.load" if access == "load" else "tl.store" if access == "store" else "the atomic"
    fix = (f"Mask it: {op}({pointer} + offsets, mask=offsets < n{', other=0.0' if access == 'load' else ''}), with "
           "the mask built from the tensor's real extent (row and column bounds for 2-D tiles); size the grid with "
           "triton.cdiv(n, BLOCK) and take offsets from the tensor's strides.")
    return Failure("memory", "Triton", message, cause, fix, line, input_set)


def race_failure(details: dict, message: str, line: int | None, input_set: str | None) -> Failure:
    """A program read what another program of its launch wrote, with no atomic ordering the two (the CPU
    interpreter's lockstep run, ``interpreter.DataRace``)."""
    name = details.get("argument") or "a tensor"
    if details.get("wait"):
        cause = (f"A wait no GPU promises to end: in {details.get('kernel') or 'a kernel'}, program "
                 f"{tuple(details.get('program') or ())} spins on {name} for a program of its launch that has not run "
                 f"(the CPU ran them one at a time, {details.get('order')}). A GPU need not start a launch's programs "
                 "in id order, nor run them all at once: the program it waits for can be waiting for its SM.")
        fix = ("Let a program wait only for programs that have started: take each program's tile from an atomic "
               "ticket (tl.atomic_add on a counter) rather than from tl.program_id, so what it waits for took its "
               "ticket first; or split the work into launches.")
        return Failure("race", "Triton", message, cause, fix, line, input_set)
    cause = (f"A data race: in {details.get('kernel') or 'a kernel'}, program {tuple(details.get('program') or ())} "
             f"reads {name} where program {tuple(details.get('writer') or ())} writes it during the same launch, and "
             "no atomic orders the write before the read. Run one program at a time the value is there; a GPU runs "
             "the programs side by side, and the read can come first and see what was there before.")
    fix = ("Give each program what it reads from the launch's inputs alone: compute the shared value in every "
           "program, or in a launch of its own before this one (the wrapper launches both). Where programs must "
           "hand values over, order them with atomics: the writer stores, then releases with an atomic on a flag "
           "(tl.atomic_xchg, or tl.atomic_add on a counter); the reader acquires with an atomic on that flag, "
           "spinning until the writer's mark is there, before it reads.")
    return Failure("race", "Triton", message, cause, fix, line, input_set)


def mutation_failure(names: list[str], input_set: str) -> Failure:
    listed = ", ".join(names)
    return Failure("mutation", "Triton", f"input(s) changed in place: {listed}",
                   f"The wrapper or kernel writes into its inputs ({listed}); callers' tensors must stay unchanged.",
                   "Write results to a freshly allocated output (torch.empty_like) and never store through an "
                   "input pointer.", None, input_set)


def task_mismatch(detail: str) -> Failure:
    return Failure("format", "Both", f"the file's TASK is not the task that was handed out: {detail}",
                   "The file implements a different task (another signature or other shapes) than the one "
                   "this attempt is for.",
                   "Implement the task that was handed out and embed it unchanged as TASK.")


def harness_failure(message: str) -> Failure:
    return Failure("runtime", "Harness", message, f"The checker could not evaluate the file: {message}.",
                   "Report this to the fusionforge maintainers with the file; it is not the kernel's fault.")
