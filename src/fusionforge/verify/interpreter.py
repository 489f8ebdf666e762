"""Make Triton's CPU interpreter compute what a GPU computes, and check every memory access it makes.

The checker's child process calls ``install_gpu_semantics()`` once, when ``TRITON_INTERPRET=1``,
before it imports a candidate file. It patches Triton 3.6's interpreter (``triton.runtime.interpreter``)
in seven places, each so that a kernel's verdict on the CPU is the one it would get on a GPU.

bfloat16 and fp8 rounding. The interpreter converts float32 -> bfloat16 by dropping the low 16 bits (round
toward zero, up to 1 ulp of error), for ``.to(tl.bfloat16)`` and for the implicit cast in ``tl.store``.
A GPU rounds to nearest even (``cvt.rn.bf16.f32``, at most 1/2 ulp). A correct bfloat16 kernel would
carry twice PyTorch's rounding error and could fail by chance. To float8 e4m3 the interpreter's rounding
loses the carry into the exponent (127.9 became 64, not 128), and from it the NaN codes read as +-480;
a GPU rounds to nearest even, saturating to +-448 (``cvt.rn.satfinite.e4m3x2.f32``), and reads NaN.
``faithful_conversions()`` converts to bfloat16 and to and from float8 e4m3 with torch instead (the fp8
values clamped to +-448 first); other conversions are left to the interpreter.

Dots. The interpreter computes ``tl.dot`` as ``np.matmul(a, b, dtype=acc)``. It holds bfloat16 values as
raw uint16 bit patterns, so a bf16 dot multiplied integers (garbage), and an fp16 dot into an fp16
accumulator summed in float16. Tensor cores multiply 16-bit operands exactly and add in fp32; here fp16
and bf16 operands are widened to fp32 (exact) and multiplied and summed in fp32, and the accumulator keeps
its dtype. A float32 dot reaches the builder with ``ir.INPUT_PRECISION.TF32`` unless the kernel asks for
"ieee" or "tf32x3" (``tl.dot`` takes ``TRITON_F32_DEFAULT`` when set, else "tf32", or "ieee" for
``allow_tf32=False``). For TF32, Triton hands the fp32 operands to ``mma``/``wgmma`` unconverted (it
emits ``cvt.rna.tf32.f32`` only to split tf32x3 operands), and the tensor cores read only the top 19
bits: each operand is truncated to 10 mantissa bits, ``x & 0xFFFFE000``. On an H200 with Triton 3.6 the
default dot matched this truncation to 2e-7 (relative L2), and round-to-nearest only to 9e-4
(``benchmarks/dot_rounding_gpu.py``). A float32 kernel with a default ``tl.dot`` thus fails a float32
check here as it does on the GPU. "ieee" and "tf32x3" (fp32-accurate on a GPU, 2e-7 on the H200) stay
fp32 products; fp8, int8 and fp64 dots are Triton's own ("bf16x3" and "bf16x6", which a GPU accepts,
the interpreter still refuses).

Scans and reductions. The interpreter computes ``tl.cumsum``, ``tl.cumprod``, ``tl.associative_scan`` and a
``tl.reduce`` with the kernel's own combine function in order, one value after another (a Python call a value for
the last two): a float32 prefix sum of 8209 equal values drifted by 5e-5 (relative), and a correct scan kernel
failed on the CPU. Triton lowers a scan as each thread's contiguous values in order, then a warp's threads by
shuffles (log2 32 steps), then the warps' totals carried along the axis in order; a reduction as each thread's
values in order, then a tree. Here the same orders combine them (``warp_ordered_scan``, ``tree_reduce``; a thread
holding 4 values along the axis; that sum: 5e-7, not yet compared with a GPU's), on whole arrays; a bfloat16
operand (held as bits), and a combine function that branches on its values (``elementwise``), keep the
interpreter's order. ``tl.sum``, ``tl.max`` and ``tl.min`` stay numpy's (a pairwise sum).

Scalar arguments. The GPU compiler types a Python float argument fp32, a bool i1 and an int i32, i64 or
u64 by its value (``triton.runtime.jit.mangle_type``). The interpreter passed floats through as Python
floats (``scale.to(tl.float16)`` raised AttributeError, ``x_fp16 * scale`` stayed fp16), rejected bools,
and held ints in [2**31, 2**32) as uint32. Here each becomes a scalar of the GPU's type; constexpr
arguments are untouched.

Memory bounds. An access outside a tensor reads garbage or faults on a GPU; in the interpreter it reads
the host heap, corrupts it (``malloc(): unaligned tcache chunk``, hangs) or goes unnoticed. When the
interpreter converts a launch's arguments, each tensor argument's pointer gets a tag in bits 48-62 (an
index into this launch's table of arguments; x86-64 user addresses lie below 2**47), and pointer
arithmetic carries it along, so every pointer, block pointer and tensor descriptor knows the argument it
came from. Before each load, store and atomic, every masked-in lane must satisfy
``start <= address`` and ``address + element bytes <= end`` for its argument's storage (a view may reach
all of the storage it views); an untagged pointer (made from an integer, say) never does. A violation
raises ``OutOfBoundsAccess`` before memory is touched; otherwise the tags are stripped and the access
runs. Masked-off lanes are neither checked nor touched. A launch whose storages do not all lie below
2**47 runs unchecked, with a warning. The tags show only where a kernel turns a pointer into an integer
(alignment tests still hold: the tag is a multiple of 2**48). Each store and atomic also notes its element width
against the storage it writes (``take_stored_widths``): the ledger learns the width a kernel's values have, a
pointer cast's included.

Autotuning. Triton's autotuner benchmarks every config, which the interpreter cannot (it has no
benchmarker: a kernel with two configs failed with "0 active drivers"). Here each config runs once while
tuning, as on a GPU (side effects such as atomics into an output that no hook resets included), and the
first wins; one that cannot run (a failed static_assert) is skipped, as a GPU skips it. Configs that differ
only in what the interpreter ignores (warps, stages: ``launches.config_key``) run once. The checker then runs
the file once per further combination of configs, each forced as a cached choice would be
(``launches.LaunchMonitor.forced``), so every config a GPU might pick is checked.

Program order. The interpreter runs a launch's programs one after another in the order of their ids; a GPU runs
them in any order, many at once. A kernel whose programs read what another program of the same launch writes (a
buffer program 0 fills for the rest) is right here and races there. When ``PROGRAM_ORDER["reversed"]`` is set (the
checker sets it for a set's second call and for every autotune config it forces), the programs run from the last id
to the first. Either order still runs each program to its end before the next starts, so a program that claims a job
with an atomic (the first to swap a flag computes a tensor's scale, the rest read it) is right in both. A launch that
makes an atomic while the order is reversed therefore runs again from its inputs, in lockstep (``LOCKSTEP_WAVE``
programs at once, each a thread, one running at a time, handing over at each load, store and atomic), as a GPU's
resident programs run side by side: the programs take turns up to their first atomic that changes memory (a claim;
an atomic read, a failed compare-and-swap or a masked-off atomic changes nothing), then the one that arrived there
first runs last (``_run_lockstep``), so the rest read the scale before it is written however long they wait first,
unless they wait for it (spin on an atomic). With ``PROGRAM_ORDER["latest_first"]`` off the earliest arrival runs
first instead, for a claim the last to arrive makes: the checker runs a call whose launches ran in lockstep once
more that way (``LOCKSTEP_RUNS`` counts them). A lock taken and released with atomics, or a last arriver that counts
the others in with an atomic before reading their partial results, stays right in both.

Races. A launch without atomics is never run in lockstep (two programs that both write a value the rest read are right
in either order), and a race of atomics alone (a scale handed over by atomics) is no data race: lockstep finds it by its
values. So every launch while the order is reversed, and its lockstep run, track what orders their programs' accesses,
as a GPU's memory model does: vector clocks (``_HappensBefore``). Each of Triton's atomics (acq_rel) acquires what the
last atomic on each of its bytes released, then releases its program's clock there. A load or an atomic of a byte that
another program of the launch wrote, where no chain of atomics orders that write before it, raises ``DataRace``. A read
the run puts before the write sees the old value, which the outputs show (in lockstep: the claimer's readers above; one
program at a time: the other order, the set's first call); writes by two programs to one byte are not flagged (nothing
is read).
"""

from __future__ import annotations

import ast
import ctypes
import inspect
import itertools
import textwrap
import threading
import warnings

import numpy as np
import torch

_FLOAT_SOURCES = ("fp16", "fp32", "fp64")
FP8_E4M3_MAX = 448.0  # the largest finite float8 e4m3 value
_TAG_SHIFT = 48
_ADDRESS_MASK = np.uint64(2**_TAG_SHIFT - 1)
_MAX_TAG = 2**15 - 1  # tags use bits 48..62; bit 63 stays clear
_ADDRESS_LIMIT = 2**47  # x86-64 user space: every storage must end at or below this
_TF32_MASK = np.uint32(0xFFFFE000)  # sign, 8 exponent bits and the top 10 mantissa bits of an fp32


class KernelFault(Exception):
    """A fault the interpreter finds in a kernel, with ``details`` for the failure analysis."""

    def __init__(self, message: str, details: dict) -> None:
        super().__init__(message)
        self.details = details
        KERNEL_FAULTS.append(self)


class DataRace(KernelFault):
    """A program read a byte another program of its launch wrote, with nothing ordering the write before the read
    (module docstring, Races). ``details``: race (True), kernel, access (load or atomic), argument, offset, dtype,
    program and writer (grid indices)."""


class StalledProgram(KernelFault):
    """A program spun on an address while no other program of its launch could run (programs one at a time): it waits
    for one that has not started. ``details``: race and wait (True), kernel, argument, offset, program, order."""


class OutOfBoundsAccess(KernelFault):
    """A kernel's load, store or atomic would touch memory outside the tensor argument it came from.

    ``details``: kernel, access ("load", "store", "atomic"), argument (the pointer argument's name, None
    for an untagged pointer), offset (first offending lane, in elements from the argument's first
    element), valid_offsets ([first, last] of its storage), dtype (element type accessed),
    lanes_out_of_bounds, lanes_active (masked-in lanes), program ([x, y, z]) and inside (another
    argument whose storage holds the address, or None).
    """


def faithful_conversions() -> bool:
    """Patch the interpreter's float conversions to bfloat16 and to and from float8 e4m3 (module docstring); True
    when it was patched."""
    try:
        from triton._C.libtriton import ir
        from triton.runtime import interpreter
    except ImportError:
        return False
    original = getattr(interpreter, "_convert_float", None)
    if original is None or getattr(original, "faithful", False):
        return original is not None

    def convert(values, input_dtype, output_dtype, rounding_mode):
        source, target = input_dtype.name, output_dtype.name
        if rounding_mode == ir.ROUNDING_MODE.RTZ or not ({source, target} <= {*_FLOAT_SOURCES, "bf16", "fp8e4nv"}):
            return original(values, input_dtype, output_dtype, rounding_mode)
        if target == "bf16" and source in _FLOAT_SOURCES:
            rounded = torch.from_numpy(np.ascontiguousarray(values)).to(torch.bfloat16)
            return rounded.view(torch.int16).numpy().view(np.uint16).reshape(values.shape)
        if "fp8e4nv" not in (source, target):
            return original(values, input_dtype, output_dtype, rounding_mode)
        held = torch.from_numpy(np.ascontiguousarray(values))  # bf16 and fp8 come as raw bits
        held = held.view({"bf16": torch.bfloat16, "fp8e4nv": torch.float8_e4m3fn}.get(source, held.dtype))
        if target == "fp8e4nv":
            wide = held.to(torch.float32)
            fp8 = torch.where(wide.isnan(), wide, wide.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)).to(torch.float8_e4m3fn)
            return fp8.view(torch.uint8).numpy().reshape(values.shape)
        wide = held.to({"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
                        "fp64": torch.float64}[target])
        if target == "bf16":
            return wide.view(torch.int16).numpy().view(np.uint16).reshape(values.shape)
        return wide.numpy().reshape(values.shape)

    convert.faithful = True
    interpreter._convert_float = convert
    return True


PROGRAM_ORDER = {"reversed": False, "latest_first": True}  # module docstring, Program order
LOCKSTEP_WAVE = 64  # programs running side by side in lockstep (module docstring)
SPIN_ATOMICS = 8  # atomics on one address in a row that show a lockstep program waiting for another
HANG_ATOMICS = 4096  # atomics in a row on one address, changing nothing, that show a program stalled (_count_waits)
_WAITS: dict = {"key": None, "count": 0}  # the last atomic's program and address, and the count in a row
SPIN_RUN_AHEAD = 256  # atomics a program makes at once when it first spins (``_run_lockstep``)
LOCKSTEP_RUNS = {"count": 0}  # lockstep launches so far
KERNEL_FAULTS: list[KernelFault] = []  # every fault raised, kept whatever the wrapper does with the exception
_MEMORY_OPS = ("create_load", "create_masked_load", "create_tensor_pointer_load", "create_descriptor_load",
               "create_descriptor_gather", "create_store", "create_masked_store", "create_tensor_pointer_store",
               "create_descriptor_store", "create_descriptor_scatter", "create_atomic_rmw", "create_atomic_cas")
_ATOMICS = {"made": 0}  # atomics made so far, in any launch
_PROGRAM = threading.local()  # in a lockstep program's thread: its turn (_Turn)
_ORDER = {"run": None}  # the _HappensBefore of the reversed launch running one program at a time


def install_gpu_semantics() -> None:
    """Make the interpreter compute what a GPU would and check its memory accesses (module docstring)."""
    faithful_conversions()
    _install_gpu_arithmetic()
    _install_bounds_checks()
    _install_autotuning()
    _install_program_order()
    _install_lockstep()


def _install_program_order() -> None:
    """Program ids handed out last first while ``PROGRAM_ORDER["reversed"]`` (module docstring; idempotent)."""
    from triton.runtime import interpreter

    def reordered(set_grid_idx):
        def set_grid_idx_in_order(builder, x, y, z):
            if PROGRAM_ORDER["reversed"]:
                x, y, z = (size - 1 - index for size, index in zip(builder.grid_dim, (x, y, z)))
            return set_grid_idx(builder, x, y, z)
        return set_grid_idx_in_order

    if not getattr(interpreter.InterpreterBuilder.set_grid_idx, "gpu_semantics", False):
        _replace(interpreter.InterpreterBuilder, "set_grid_idx", reordered)


def _install_lockstep() -> None:
    """A launch that makes an atomic while the order is reversed runs again in lockstep (module docstring;
    idempotent): program ids per thread, a hand-over before each memory access, atomics counted."""
    from triton.runtime import interpreter

    def counted(create):
        def create_atomic(builder, *args, **kwargs):
            _ATOMICS["made"] += 1
            return create(builder, *args, **kwargs)
        return create_atomic

    def handing_over(create):
        def create_access(builder, *args, **kwargs):
            turn = getattr(_PROGRAM, "turn", None)
            if turn is not None:
                turn.hand_over()
            return create(builder, *args, **kwargs)
        return create_access

    def ordered(create, access: str, ptr_at: int, mask_at: int | None):
        def create_access(builder, *args, **kwargs):
            result = create(builder, *args, **kwargs)
            turn = getattr(_PROGRAM, "turn", None)
            order, grid_idx = (turn.order, turn.grid_idx) if turn is not None else (_ORDER["run"], builder.grid_idx)
            mask = args[mask_at] if mask_at is not None and mask_at < len(args) else kwargs.get("mask")
            if order is not None and _LAUNCH.checking:
                order.access(tuple(int(i) for i in grid_idx), builder.grid_dim, access, args[ptr_at], mask)
            if access == "atomic":
                changed = _changed_memory(args[ptr_at], mask, result)
                if turn is None:
                    _count_waits(grid_idx, args[ptr_at], changed)
            if turn is not None:
                turn.accessed(access, int(args[ptr_at].data.flat[0]), access == "atomic" and changed)
            return result
        return create_access

    def own_id(create):
        def create_get_program_id(builder, axis):
            turn = getattr(_PROGRAM, "turn", None)
            if turn is None:
                return create(builder, axis)
            return interpreter.TensorHandle(np.array([turn.grid_idx[axis]], dtype=np.int32), interpreter.tl.int32)
        return create_get_program_id

    def racing(call):
        def __call__(executor, *args_dev, **kwargs):
            if not PROGRAM_ORDER["reversed"]:
                return call(executor, *args_dev, **kwargs)
            storages = _storages([*args_dev, *kwargs.values()])
            before, made = [storage.clone() for storage in storages], _ATOMICS["made"]
            _ORDER["run"] = _HappensBefore()
            try:
                call(executor, *args_dev, **kwargs)
            finally:
                _ORDER["run"] = None
            if _ATOMICS["made"] != made:  # again, from the launch's inputs
                for storage, saved in zip(storages, before):
                    storage.copy_(saved)
                _lockstep_call(executor, interpreter, *args_dev, **kwargs)
        return __call__

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_get_program_id, "gpu_semantics", False):
        return
    for name in ("create_atomic_rmw", "create_atomic_cas"):
        _replace(builder, name, counted)
    # every load, store and atomic reaches one of these four (block pointers and descriptors through the first two)
    for name, access, ptr_at, mask_at in (("create_masked_load", "load", 0, 1),
                                          ("create_masked_store", "store", 0, 2),
                                          ("create_atomic_rmw", "atomic", 1, 3),
                                          ("create_atomic_cas", "atomic", 0, None)):
        _replace(builder, name, lambda create, a=access, p=ptr_at, m=mask_at: ordered(create, a, p, m))
    for name in _MEMORY_OPS:
        _replace(builder, name, handing_over)
    _replace(builder, "create_get_program_id", own_id)
    _replace(interpreter.GridExecutor, "__call__", racing)


def _storages(args: list) -> list:
    """The distinct storages of a launch's tensor arguments (in tuples and tensor descriptors too)."""
    found = {}
    for arg in args:
        if isinstance(arg, tuple):
            found.update((s.data_ptr(), s) for s in _storages(list(arg)))
        elif isinstance(getattr(arg, "base", None), torch.Tensor) and not isinstance(arg, torch.Tensor):
            found.update((s.data_ptr(), s) for s in _storages([arg.base]))
        elif isinstance(arg, torch.Tensor):
            found.setdefault(arg.untyped_storage().data_ptr(), arg.untyped_storage())
    return list(found.values())


def _count_waits(grid_idx, ptrs, changed: bool) -> None:
    """Count a program's atomics in a row on one address that change nothing, with its launch's programs running one
    at a time: at HANG_ATOMICS it waits for a program that has not run, and never will while it waits (a GPU need not
    have started that program either): ``StalledProgram``."""
    key = (tuple(int(i) for i in grid_idx), int(ptrs.data.flat[0]))
    _WAITS["count"] = _WAITS["count"] + 1 if key == _WAITS["key"] and not changed else int(not changed)
    _WAITS["key"] = key
    if _WAITS["count"] < HANG_ATOMICS or not _LAUNCH.checking:
        return
    _WAITS.update(key=None, count=0)
    tag, address = key[1] >> _TAG_SHIFT, key[1] & int(_ADDRESS_MASK)
    name, first = (_LAUNCH.arguments[tag][:2] if 0 < tag < len(_LAUNCH.arguments) else ("a pointer", address))
    size = max(1, ptrs.dtype.element_ty.primitive_bitwidth // 8)
    offset = (address - first) // size
    order = "last id first" if PROGRAM_ORDER["reversed"] else "in id order"
    raise StalledProgram(f"stalled in {_LAUNCH.kernel}: program {key[0]} made {HANG_ATOMICS} atomics in a row on "
                         f"{name} + {offset} that changed nothing, its launch's programs running one at a time "
                         f"({order}): it waits for a program that has not run",
                         {"race": True, "wait": True, "kernel": _LAUNCH.kernel, "argument": name, "offset": offset,
                          "program": list(key[0]), "order": order})


def _changed_memory(ptrs, mask, old) -> bool:
    """Whether an atomic through the tagged pointers ``ptrs`` (masked-in lanes), which found ``old`` there, left any
    of its elements with other bytes."""
    size = max(1, ptrs.dtype.element_ty.primitive_bitwidth // 8)
    lanes = np.ones(ptrs.data.shape, bool) if mask is None else np.broadcast_to(mask.data, ptrs.data.shape)
    addresses = (ptrs.data & _ADDRESS_MASK)[lanes]
    found = np.ascontiguousarray(np.broadcast_to(old.data, ptrs.data.shape)[lanes])
    return any(ctypes.string_at(int(address), size) != value.tobytes() for address, value in zip(addresses, found))


def _lockstep_call(executor, interpreter, *args_dev, **kwargs) -> None:
    """Triton 3.6's ``GridExecutor.__call__`` with the grid's programs run in lockstep, last id first."""
    argspec = inspect.getfullargspec(executor.fn)
    kwargs = {k: v for k, v in kwargs.items() if k in argspec.args}
    args_hst, kwargs_hst = executor._init_args_hst(args_dev, kwargs)
    for hook in executor.pre_run_hooks:
        hook(*args_hst, **kwargs_hst)
    patch_scope = interpreter._patch_lang(executor.fn)
    try:
        args = inspect.getcallargs(executor.fn, *args_hst, **kwargs_hst)
        args = {name: arg if name in executor.constexprs else interpreter._implicit_cvt(arg)
                for name, arg in args.items()}
        grid = executor.grid(args) if callable(executor.grid) else executor.grid
        grid = tuple(grid) + (1,) * (3 - len(grid))
        interpreter.interpreter_builder.set_grid_dim(*grid)
        programs = [(x, y, z) for x in range(grid[0]) for y in range(grid[1]) for z in range(grid[2])][::-1]
        try:
            _run_lockstep(executor.fn, args, programs)
        except Exception as exc:
            raise interpreter.InterpreterError(repr(exc)) from exc
    finally:
        patch_scope.restore()
    executor._restore_args_dev(args_dev, args_hst, kwargs, kwargs_hst)


class _HappensBefore:
    """What orders the accesses of one launch's programs, run one at a time or in lockstep (module docstring,
    Races): vector clocks.

    Program p's clock maps each program q to the last of q's epochs that p has synchronised with; p's own entry is
    its current epoch (from 1), which each atomic of p's ends. Per byte of a storage: the program that last wrote it
    and that program's epoch then (a store or an atomic), and the clock the last atomic on it released. An atomic
    takes (joins) the clocks released on its bytes, is checked as a read, writes, and releases its program's clock.
    A read of a byte whose writer w is another program, at an epoch past what the reader's clock holds for w, is a
    race.
    """

    def __init__(self) -> None:
        self.programs: dict[int, tuple] = {}  # a program's index -> its grid indices
        self.clocks: dict[int, dict[int, int]] = {}
        self.writes: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # storage start -> (writer, epoch) per byte
        self.releases: dict[int, np.ndarray] = {}  # storage start -> index into self.released per byte, -1 none
        self.released: list[dict[int, int]] = []

    def access(self, grid_idx: tuple, grid_dim: tuple, access: str, ptrs, mask) -> None:
        """Account for a load, store or atomic by the program at ``grid_idx`` through the tagged pointers ``ptrs``
        (masked-in lanes)."""
        program = grid_idx[0] + grid_dim[0] * (grid_idx[1] + grid_dim[1] * grid_idx[2])
        if program not in self.clocks:
            self.programs[program], self.clocks[program] = grid_idx, {program: 1}
        size = max(1, ptrs.dtype.element_ty.primitive_bitwidth // 8)
        data = ptrs.data.ravel() if mask is None else ptrs.data[np.broadcast_to(mask.data, ptrs.data.shape)]
        tags = data >> _TAG_SHIFT
        for tag in np.unique(tags):
            name, first, start, end = _LAUNCH.arguments[int(tag)]
            lanes = (data[tags == tag] & _ADDRESS_MASK).astype(np.int64)
            offsets = ((lanes - start)[:, None] + np.arange(size)).ravel()  # every byte the lanes touch
            if access == "atomic":
                self._acquire(program, start, end - start, offsets)
            unordered = self._unordered(program, start, offsets) if access != "store" else None
            if unordered is not None:
                byte, other = unordered
                offset = (int(lanes[byte // size]) - first) // size
                raise self._race(program, other, access, name, offset, ptrs.dtype.element_ty)
            if access != "load":
                if start not in self.writes:
                    self.writes[start] = (np.full(end - start, -1, dtype=np.int32), np.zeros(end - start, np.int32))
                writer, epoch = self.writes[start]
                writer[offsets], epoch[offsets] = program, self.clocks[program][program]
            if access == "atomic":
                self.released.append(dict(self.clocks[program]))
                self.releases[start][offsets] = len(self.released) - 1
        if access == "atomic":
            self.clocks[program][program] += 1

    def _acquire(self, program: int, start: int, nbytes: int, offsets: np.ndarray) -> None:
        releases = self.releases.setdefault(start, np.full(nbytes, -1, dtype=np.int32))
        clock = self.clocks[program]
        for index in np.unique(releases[offsets]):
            for other, epoch in self.released[index].items() if index >= 0 else ():
                if epoch > clock.get(other, 0):
                    clock[other] = epoch

    def _unordered(self, program: int, start: int, offsets: np.ndarray) -> tuple[int, int] | None:
        """The first of these bytes written by another program at an epoch ``program`` has not synchronised with,
        and that program; None if there is none."""
        if start not in self.writes:
            return None
        writer, epoch = (values[offsets] for values in self.writes[start])
        clock = self.clocks[program]
        foreign = (writer >= 0) & (writer != program)
        for other in np.unique(writer[foreign]):
            unordered = foreign & (writer == other) & (epoch > clock.get(int(other), 0))
            if unordered.any():
                return int(np.flatnonzero(unordered)[0]), int(other)
        return None

    def _race(self, program: int, writer: int, access: str, name: str, offset: int, dtype) -> DataRace:
        reader, wrote = self.programs[program], self.programs[writer]
        pointer = f"{name} + {offset}" if offset >= 0 else f"{name} - {-offset}"
        verb = "reads" if access == "load" else "makes an atomic on"
        return DataRace(f"race in {_LAUNCH.kernel}: program {reader} {verb} {pointer} ({dtype}), which program "
                        f"{wrote} wrote in the same launch with no atomic ordering the write before it",
                        {"race": True, "kernel": _LAUNCH.kernel, "access": access, "argument": name, "offset": offset,
                         "dtype": str(dtype), "program": list(reader), "writer": list(wrote)})


class _Turn:
    """One program's thread in lockstep: it runs only between ``go`` and its next hand-over (or its end)."""

    def __init__(self, fn, args: dict, grid_idx: tuple, order: _HappensBefore) -> None:
        self.grid_idx, self.order = grid_idx, order
        self.arrival: int | None = None  # when the program first changed memory with an atomic, in the launch's count
        self.claimed = False  # whether it has changed memory with an atomic
        self.spins, self.last_atomic = 0, None  # consecutive atomics on one address, and that address
        self.ran_ahead, self.free = False, 0  # whether it has run ahead as a spinner, and the accesses left to it
        self.go, self.back = threading.Event(), threading.Event()
        self.done, self.error, self.stop = False, None, False
        self.thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)

    def _run(self, fn, args: dict) -> None:
        _PROGRAM.turn = self
        try:
            self._wait()
            fn(**args)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 (raised again by the scheduler)
            self.error = exc
        finally:
            self.done = True
            self.back.set()

    def _wait(self) -> None:
        self.go.wait()
        self.go.clear()
        if self.stop:
            raise _Stopped

    def hand_over(self) -> None:
        """Called by the program before a memory access: the next program runs until its own (but while the program
        runs ahead, spinning)."""
        if self.free > 0 and self.spinning:
            self.free -= 1
            return
        self.free = 0
        self.back.set()
        self._wait()

    def step(self) -> None:
        """Called by the scheduler: run the program to its next hand-over or its end."""
        self.back.clear()
        self.go.set()
        self.back.wait()

    def accessed(self, access: str, address: int, changed: bool) -> None:
        """Called by the program after each memory access: notes an atomic that changed memory, counts its atomics
        on one address in a row."""
        self.claimed = self.claimed or changed
        if access != "atomic":
            self.spins, self.last_atomic = 0, None
            return
        self.spins = self.spins + 1 if address == self.last_atomic else 1
        self.last_atomic = address

    @property
    def spinning(self) -> bool:
        return self.spins >= SPIN_ATOMICS


class _Stopped(Exception):
    """Ends a waiting program's thread when another program failed."""


def _run_lockstep(fn, args: dict, programs: list[tuple]) -> None:
    """Run ``programs`` (grid indices, in the order they start) LOCKSTEP_WAVE at a time, a step being a program's run
    to its next memory access, a finished one replaced by the next to start; the first error raised again.

    Programs that have not yet changed memory with an atomic step in turn. Once each running program has either
    done so or spins (SPIN_ATOMICS atomics on one address in a row: it waits for another program), the program that
    arrived last (``PROGRAM_ORDER["latest_first"]``; else first) runs, step after step, until it ends or spins; then
    the next, each spinning program stepping again after each of its steps. A program that spins for the first time
    runs on at once for up to SPIN_RUN_AHEAD atomics: one that spins a fixed count, not for a value, goes on before
    the others are done unless its count outlasts that and the claimer's steps at the checked shapes (on a GPU, as
    many atomics on one address from every resident program). When every one left spins, they all try again. With
    the latest first, the first to claim runs last: a program that reads what the claimer has not yet written,
    whatever it does first, reads too early (module docstring, Program order).
    """
    waiting, running = list(programs), []
    order, arrivals = _HappensBefore(), itertools.count()
    pick = max if PROGRAM_ORDER["latest_first"] else min
    LOCKSTEP_RUNS["count"] += 1
    try:
        while waiting or running:
            while waiting and len(running) < LOCKSTEP_WAVE:
                turn = _Turn(fn, args, waiting.pop(0), order)
                turn.thread.start()
                running.append(turn)
            spinning = [turn for turn in running if turn.spinning]
            chosen = [turn for turn in running if turn.arrival is None and not turn.spinning]
            if not chosen:
                arrived = [turn for turn in running if turn.arrival is not None and not turn.spinning]
                if not arrived:
                    for turn in running:
                        turn.spins = 0
                    continue
                first = pick(arrived, key=lambda turn: turn.arrival)
                chosen = [first, *spinning]
            for turn in chosen:
                if turn.spinning and not turn.ran_ahead:
                    turn.ran_ahead, turn.free = True, SPIN_RUN_AHEAD
                turn.step()
                if turn.arrival is None and turn.claimed:
                    turn.arrival = next(arrivals)
                if turn.done:
                    running.remove(turn)
                    if turn.error is not None:
                        raise turn.error
    finally:
        for turn in running:
            turn.stop = True
            turn.go.set()
            turn.thread.join()


def _install_autotuning() -> None:
    """Autotuning without a benchmarker (idempotent): each config runs once while tuning and the first wins (module
    docstring)."""
    from triton.runtime import autotuner

    from fusionforge.verify.launches import distinct_configs

    if getattr(autotuner.Autotuner.prune_configs, "gpu_semantics", False):
        return
    autotuner.Autotuner.do_bench = property(lambda self: _trial)
    _replace(autotuner.Autotuner, "prune_configs", lambda prune: lambda self, kwargs: distinct_configs(
        prune(self, kwargs)))


def _trial(kernel_call, quantiles=None, **kwargs):
    """A config's run while tuning, once, as a GPU's trials run it (their side effects included); every config takes
    1.0, so the first wins. One that cannot run (a failed static_assert) is skipped, as a GPU's tuning skips it."""
    from triton.compiler.errors import CompileTimeAssertionFailure

    from fusionforge.verify.launches import cannot_run

    try:
        kernel_call()
    except Exception as exc:
        if cannot_run(exc):
            raise CompileTimeAssertionFailure(None, None, str(exc)) from exc
        raise
    return [1.0] * len(quantiles) if quantiles else 1.0


def _install_gpu_arithmetic() -> None:
    """Dots, scans and scalar arguments as on a GPU (idempotent)."""
    from triton.runtime import interpreter

    if not getattr(interpreter.InterpreterBuilder.create_dot, "gpu_semantics", False):
        _replace(interpreter.InterpreterBuilder, "create_dot", _gpu_dot)
        _replace(interpreter, "_implicit_cvt", _typed_scalars)
        for name in ("cumsum", "cumprod", "generic_scan"):
            _replace(interpreter.ScanOps, name, _gpu_scan)
        _replace(interpreter.ReduceOps, "generic_reduce", _gpu_reduce)


def _install_bounds_checks() -> None:
    """Tagged tensor pointers and bounds-checked loads, stores and atomics (idempotent)."""
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_masked_load, "gpu_semantics", False):
        return
    _replace(builder, "create_masked_load", _checked_load)
    _replace(builder, "create_masked_store", _checked_store)
    _replace(builder, "create_atomic_rmw", _checked_atomic_rmw)
    _replace(builder, "create_atomic_cas", _checked_atomic_cas)
    _replace(interpreter.GridExecutor, "_init_args_hst", _registering_args)
    _replace(interpreter, "_implicit_cvt", _tagged_pointers)


def _replace(owner, name: str, make) -> None:
    """owner.name = make(original): the replacement wraps Triton's own (or an earlier replacement)."""
    patched = make(getattr(owner, name))
    patched.gpu_semantics = True
    setattr(owner, name, patched)


# -- scans --------------------------------------------------------------------------------------------

SCAN_RUN = 4  # the contiguous values a thread scans in order along the axis (a 16-byte vector of fp32)
SCAN_LANES = 32  # the threads of a warp whose runs combine by shuffles


def _native(tensors) -> bool:
    """Whether numpy computes on these operands in their own dtype (bfloat16 is held as bits)."""
    return all(t.handle.data.dtype.kind in "fiu" and not t.dtype.is_bf16() for t in tensors)


_BRANCHING = (ast.If, ast.IfExp, ast.While, ast.For, ast.BoolOp)


def elementwise(fn, seen: frozenset = frozenset()) -> bool:
    """Whether a combine function (a jitted function) computes the same on whole arrays as on single values: no
    Python branch, loop or ``and``/``or`` on its values (the interpreter takes any array as true), no builtin min or
    max, in it or in the jitted functions it calls."""
    function = getattr(fn, "fn", None)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (TypeError, OSError, SyntaxError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, _BRANCHING):
            return False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("min", "max"):
                return False
            callee = function.__globals__.get(node.func.id)
            if hasattr(callee, "fn") and callee not in seen and not elementwise(callee, seen | {fn}):
                return False
    return True


def _array_combine(op, tensors):
    """``op``'s combine function (a scan's or a reduction's) on lists of arrays, one an operand: their last axis
    padded to a power of two (a block's shape) by repeating its last value, combined, then cut back."""
    import triton
    from triton.runtime import interpreter

    def combine(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
        count = b[0].shape[-1]
        pad = triton.next_power_of_2(count) - count

        def block(x, t):
            return op.to_tensor(np.concatenate([x, np.repeat(x[..., -1:], pad, -1)], -1), t.dtype)

        merged = op.combine_fn.fn(*(block(x, t) for x, t in zip(a, tensors)),
                                  *(block(x, t) for x, t in zip(b, tensors)))
        merged = merged if isinstance(merged, tuple) else (merged,)
        return [np.broadcast_to(m.handle.data if isinstance(m, interpreter.tl.core.tensor) else m,
                                x.shape[:-1] + (count + pad,))[..., :count].astype(x.dtype)
                for m, x in zip(merged, b)]

    return combine


def _gpu_scan(original):
    def scan(self, *operands):
        """The scan in the order a GPU's lowering combines values (module docstring): each thread's run of SCAN_RUN
        in order, the runs of a warp's SCAN_LANES threads by shuffles (log2 32 steps), then the warps' totals carried
        along the axis one after another. Operands that numpy cannot add in their own dtype (bfloat16 held as bits),
        and a combine function that branches on its values, keep the interpreter's order."""
        tensors = operands[0] if isinstance(operands[0], (list, tuple)) else operands
        if not _native(tensors):
            return original(self, *operands)
        if original.__name__ == "generic_scan":
            if not elementwise(self.combine_fn):
                return original(self, *operands)
            combine = _array_combine(self, tensors)
        else:
            ufunc = np.add if original.__name__ == "cumsum" else np.multiply

            def combine(a, b):
                return [ufunc(a[0], b[0])]
        values = [np.moveaxis(t.handle.data, self.axis, -1).copy() for t in tensors]
        scanned = warp_ordered_scan(values, combine)
        return [self.to_tensor(np.ascontiguousarray(np.moveaxis(x, -1, self.axis)), t.dtype)
                for x, t in zip(scanned, tensors)]

    scan.__name__ = original.__name__
    return scan


def _gpu_reduce(original):
    def generic_reduce(self, input):
        """A reduction with the kernel's own combine function in a GPU's order (module docstring): each thread's
        run of SCAN_RUN in order, then the run totals pairwise, neighbours first. Operands numpy cannot compute on in
        their own dtype, and a combine function that branches on its values, keep the interpreter's order."""
        tensors = list(input)
        if not (_native(tensors) and elementwise(self.combine_fn)):
            return original(self, input)
        data = [t.handle.data for t in tensors]
        shape = data[0].shape
        values = [d.reshape(-1) if self.axis is None else np.moveaxis(d, self.axis, -1) for d in data]
        reduced = tree_reduce(values, _array_combine(self, tensors))
        results = []
        for x, t in zip(reduced, tensors):
            if self.keep_dims:
                x = np.expand_dims(x, self.axis) if self.axis is not None else x.reshape((1,) * len(shape))
            elif self.axis is None:
                x = x.item()
            results.append(self.to_tensor(x, t.dtype))
        return results

    return generic_reduce


def _scan_runs(values: list[np.ndarray], combine) -> tuple[list[np.ndarray], np.ndarray]:
    """Each thread's run of SCAN_RUN values along the last axis scanned in order (copies of ``values``), and the
    position of each run's last value (its total)."""
    n = values[0].shape[-1]
    out = [v.copy() for v in values]
    for j in range(1, SCAN_RUN):
        later = [x[..., j::SCAN_RUN] for x in out]
        count = later[0].shape[-1]
        if count == 0:
            break
        merged = combine([x[..., j - 1::SCAN_RUN][..., :count] for x in out], later)
        for x, m in zip(out, merged):
            x[..., j::SCAN_RUN] = m
    return out, np.minimum(np.arange(SCAN_RUN - 1, n + SCAN_RUN - 1, SCAN_RUN), n - 1)


def tree_reduce(values: list[np.ndarray], combine) -> list[np.ndarray]:
    """Reduce the arrays ``values`` (one an operand) along their last axis as a GPU does: runs of SCAN_RUN values in
    order, then the run totals pairwise, each with its right neighbour, until one is left; ``combine(a, b)`` as in
    ``warp_ordered_scan``. The results lose the last axis."""
    out, ends = _scan_runs(values, combine)
    totals = [x[..., ends] for x in out]
    while totals[0].shape[-1] > 1:  # neighbours, pairwise
        paired = totals[0].shape[-1] // 2 * 2
        merged = combine([t[..., 0:paired:2] for t in totals], [t[..., 1:paired:2] for t in totals])
        totals = [np.concatenate([m, t[..., paired:]], -1) for m, t in zip(merged, totals)]
    return [t[..., 0] for t in totals]


def warp_ordered_scan(values: list[np.ndarray], combine) -> list[np.ndarray]:
    """Inclusive scan along the last axis of the arrays ``values`` (a tuple scan: one array per operand), combined
    as a GPU combines them: runs of SCAN_RUN values in order, then run totals within each SCAN_LANES-run segment by
    doubling strides, then segment totals carried in order; each value then takes its run's exclusive prefix.
    ``combine(a, b)`` merges two lists of equal-shape arrays (earlier first)."""
    n = values[0].shape[-1]
    out, ends = _scan_runs(values, combine)
    totals = [x[..., ends] for x in out]
    runs = np.arange(len(ends))
    step = 1
    while step < SCAN_LANES:  # a warp's runs, by shuffles: each takes the total `step` runs before it
        taking = runs[runs % SCAN_LANES >= step]
        if taking.size == 0:
            break
        merged = combine([t[..., taking - step] for t in totals], [t[..., taking] for t in totals])
        for t, m in zip(totals, merged):
            t[..., taking] = m
        step *= 2
    for first in range(SCAN_LANES, len(ends), SCAN_LANES):  # the warps' totals, carried in order
        segment = runs[first:first + SCAN_LANES]
        merged = combine([np.broadcast_to(t[..., first - 1:first], t[..., segment].shape) for t in totals],
                         [t[..., segment] for t in totals])
        for t, m in zip(totals, merged):
            t[..., segment] = m
    later = np.arange(SCAN_RUN, n)  # every value after the first run takes the total of the runs before its own
    if later.size == 0:
        return out
    merged = combine([t[..., later // SCAN_RUN - 1] for t in totals], [x[..., later] for x in out])
    for x, m in zip(out, merged):
        x[..., later] = m
    return out


# -- dots ---------------------------------------------------------------------------------------------

def _gpu_dot(original):
    from triton._C.libtriton import ir
    from triton.runtime.interpreter import TensorHandle

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        """d + a @ b: 16-bit operands exact, fp32 operands TF32-truncated unless ieee/tf32x3; sums in fp32."""
        kind = a.dtype.name
        if kind not in ("fp16", "bf16", "fp32") or b.dtype.name != kind:
            return original(self, a, b, d, input_precision, max_num_imprecise_acc)
        lhs, rhs = _as_fp32(a.data, kind), _as_fp32(b.data, kind)
        if kind == "fp32" and input_precision == ir.INPUT_PRECISION.TF32:
            lhs, rhs = _tf32(lhs), _tf32(rhs)
        total = np.matmul(lhs, rhs) + d.data.astype(np.float32)
        return TensorHandle(total.astype(d.data.dtype), d.dtype.scalar)

    return create_dot


def _as_fp32(values: np.ndarray, kind: str) -> np.ndarray:
    """fp16 or bf16 (raw uint16 bits: the high half of an fp32) widened exactly to fp32."""
    if kind == "bf16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32, copy=False)


def _tf32(values: np.ndarray) -> np.ndarray:
    """What a tensor core reads of an fp32 operand: the low 13 mantissa bits dropped (toward zero)."""
    return (values.view(np.uint32) & _TF32_MASK).view(np.float32)


# -- scalar and tensor arguments ----------------------------------------------------------------------

class _Launch:
    """The tensor arguments of the launch being interpreted, by tag (0: no tag, never valid)."""

    def __init__(self) -> None:
        self.kernel = ""
        self.checking = True
        self.names: dict[int, str] = {}  # id(host-side argument) -> its name in the kernel's signature
        self.arguments: list[tuple | None] = [None]  # tag -> (name, first element's address, start, end)
        # tag -> storage start / end, for every value bits 48-63 can hold; unused tags are never valid
        self.starts = np.full(2**16, 2**64 - 1, dtype=np.uint64)
        self.ends = np.zeros(2**16, dtype=np.uint64)
        self.stored: dict[int, set[int]] = {}  # storage start -> the element widths stored into it (take_stored_widths)

    def begin(self, kernel: str, arguments: dict) -> None:
        """Forget the last launch; learn this one's argument names and whether its addresses can be tagged."""
        used = len(self.arguments)
        self.starts[1:used], self.ends[1:used] = 2**64 - 1, 0
        self.kernel, self.names, self.arguments = kernel, {}, [None]
        tensors = []
        for name, value in arguments.items():
            self._name(value, name, tensors)
        spans = [_storage_span(t) for t in tensors]
        self.checking = len(tensors) <= _MAX_TAG and all(end <= _ADDRESS_LIMIT for _, end in spans if end)
        if not self.checking:
            warnings.warn(f"{kernel}: tensor addresses do not fit below 2**47 (or too many tensors); "
                          "this launch's memory accesses are not bounds-checked", RuntimeWarning, stacklevel=2)

    def _name(self, value, name: str, tensors: list) -> None:
        from triton.tools.tensor_descriptor import TensorDescriptor

        if isinstance(value, TensorDescriptor):
            value = value.base
        if hasattr(value, "data_ptr"):
            self.names[id(value)] = name
            tensors.append(value)
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                self._name(item, f"{name}[{i}]", tensors)

    def tag(self, tensor) -> int:
        """A new tag for this tensor argument: its storage becomes the range its pointers may touch."""
        tag = len(self.arguments)
        start, end = _storage_span(tensor)
        self.arguments.append((self.names.get(id(tensor), "<tensor>"), tensor.data_ptr(), start, end))
        self.starts[tag], self.ends[tag] = start, end
        return tag


_LAUNCH = _Launch()


def take_stored_widths() -> dict[int, set[int]]:
    """The element widths, in bytes, that stores and atomics wrote into each argument's storage (by the address of
    its first byte) since the last call, which are then forgotten. A kernel that casts a pointer stores at the cast's
    width: float32 values stored into memory given as bfloat16 are 4-byte values there. Launches run unchecked
    (addresses above 2**47) record nothing."""
    stored, _LAUNCH.stored = _LAUNCH.stored, {}
    return stored


def _storage_span(tensor) -> tuple[int, int]:
    """[start, end) of the bytes a tensor's pointer may reach: its whole storage (a view sees all of it)."""
    from triton.runtime.interpreter import _unwrap_tensor

    base = _unwrap_tensor(tensor)
    if not hasattr(base, "untyped_storage"):  # an object with only data_ptr(): its extent is unknown
        return 0, _ADDRESS_LIMIT
    storage = base.untyped_storage()
    return storage.data_ptr(), storage.data_ptr() + storage.nbytes()


def _registering_args(original):
    def init_args_hst(self, args_dev, kwargs):
        """Triton's host copies of the arguments, registered (by name) for tagging before conversion."""
        args_hst, kwargs_hst = original(self, args_dev, kwargs)
        named = inspect.getcallargs(self.fn, *args_hst, **kwargs_hst)
        _LAUNCH.begin(self.fn.__name__, {n: v for n, v in named.items() if n not in self.constexprs})
        return args_hst, kwargs_hst

    return init_args_hst


def _typed_scalars(original):
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle, _get_np_dtype
    from triton.runtime.jit import mangle_type

    def implicit_cvt(arg):
        """A bool, float or int kernel argument as a scalar of the type the GPU compiler gives it."""
        if isinstance(arg, (bool, float)) or (isinstance(arg, int) and -2**63 <= arg < 2**64):
            ty = tl.str_to_ty(mangle_type(arg), None)
            return tl.tensor(TensorHandle(np.array([arg], dtype=_get_np_dtype(ty)), ty), ty)
        return original(arg)

    return implicit_cvt


def _tagged_pointers(original):
    def implicit_cvt(arg):
        """A tensor argument's pointer with this launch's tag for it in bits 48-62."""
        converted = original(arg)
        if hasattr(arg, "data_ptr") and _LAUNCH.checking:
            converted.handle.data |= np.uint64(_LAUNCH.tag(arg) << _TAG_SHIFT)
        return converted

    return implicit_cvt


# -- bounds-checked memory access ---------------------------------------------------------------------

def _checked_load(original):
    def create_masked_load(self, ptrs, mask, *rest, **kwargs):
        return original(self, _untagged(self, "load", ptrs, mask), mask, *rest, **kwargs)

    return create_masked_load


def _checked_store(original):
    def create_masked_store(self, ptrs, value, mask, *rest, **kwargs):
        return original(self, _untagged(self, "store", ptrs, mask), value, mask, *rest, **kwargs)

    return create_masked_store


def _checked_atomic_rmw(original):
    def create_atomic_rmw(self, rmw_op, ptr, val, mask, *rest):
        return original(self, rmw_op, _untagged(self, "atomic", ptr, mask), val, mask, *rest)

    return create_atomic_rmw


def _checked_atomic_cas(original):
    def create_atomic_cas(self, ptr, cmp, val, *rest):
        return original(self, _untagged(self, "atomic", ptr, None), cmp, val, *rest)

    return create_atomic_cas


def _untagged(builder, access: str, ptrs, mask):
    """ptrs without their tags, once every masked-in lane is inside its argument's storage.

    A lane at address p of element size s, tagged t, is inside when start_t <= p and p + s <= end_t.
    Fast path: a block's lanes nearly always share the first lane's tag t, so the tagged values are
    compared with t's tagged bounds, (t << 48) + start_t and (t << 48) + end_t - s: two comparisons and
    no table lookups. Lanes that fail it (or carry another tag) go to the exact per-lane check.
    """
    from triton.runtime.interpreter import TensorHandle

    if not _LAUNCH.checking:
        return ptrs
    size = max(1, ptrs.dtype.element_ty.primitive_bitwidth // 8)  # int1 is stored in a byte
    tag = int(ptrs.data.flat[0]) >> _TAG_SHIFT
    if 0 < tag < len(_LAUNCH.arguments):
        _, _, start, end = _LAUNCH.arguments[tag]
        base = tag << _TAG_SHIFT
        outside = (ptrs.data < np.uint64(base + start)) | (ptrs.data > np.uint64(base + end - size))
        if mask is not None:
            outside &= mask.data
        if not outside.any():
            if access != "load":
                _LAUNCH.stored.setdefault(start, set()).add(size)
            return TensorHandle(ptrs.data & _ADDRESS_MASK, ptrs.dtype)
    _check_every_lane(builder, access, ptrs, mask, size)
    if access != "load":
        _record_stores(ptrs, mask, size)
    return TensorHandle(ptrs.data & _ADDRESS_MASK, ptrs.dtype)


def _record_stores(ptrs, mask, size: int) -> None:
    """Note a store of ``size``-byte elements into the storage of each tag its masked-in lanes carry."""
    tags = ptrs.data >> _TAG_SHIFT
    if mask is not None:
        tags = tags[np.broadcast_to(mask.data, tags.shape)]
    for tag in np.unique(tags):
        _LAUNCH.stored.setdefault(int(_LAUNCH.starts[tag]), set()).add(size)


def _check_every_lane(builder, access: str, ptrs, mask, size: int) -> None:
    """Each lane against the storage of its own tag (the tables); raises OutOfBoundsAccess on the first outside."""
    tags = ptrs.data >> _TAG_SHIFT
    addresses = ptrs.data & _ADDRESS_MASK
    outside = (addresses < _LAUNCH.starts[tags]) | (addresses + size > _LAUNCH.ends[tags])
    if mask is not None:
        outside &= mask.data
    if outside.any():
        active = int(np.broadcast_to(mask.data, outside.shape).sum()) if mask is not None else outside.size
        raise _violation(builder, access, ptrs.dtype.element_ty, tags, addresses, outside, active)


def _violation(builder, access: str, element, tags, addresses, outside, active: int) -> OutOfBoundsAccess:
    """The exception for the first lane outside its storage, with the offsets a kernel writer reads."""
    lane = int(np.flatnonzero(outside)[0])
    tag, address = int(tags.flat[lane]), int(addresses.flat[lane])
    size = max(1, element.primitive_bitwidth // 8)
    turn = getattr(_PROGRAM, "turn", None)  # in lockstep the builder's indices are another program's
    program = [int(i) for i in (turn.grid_idx if turn is not None else builder.grid_idx)]
    known = _LAUNCH.arguments[tag] if 0 < tag < len(_LAUNCH.arguments) else None
    inside = next((name for name, _, start, end in _LAUNCH.arguments[1:]
                   if start <= address and address + size <= end), None)
    details = {"kernel": _LAUNCH.kernel, "access": access, "argument": None, "offset": None,
               "valid_offsets": None, "dtype": str(element), "lanes_out_of_bounds": int(outside.sum()),
               "lanes_active": active, "program": program, "inside": inside}
    lanes = f"{details['lanes_out_of_bounds']} of {active} masked-in lanes, program {tuple(program)}"
    if known is None:
        return OutOfBoundsAccess(f"{access} through a pointer not derived from any tensor argument in "
                                 f"{_LAUNCH.kernel} (address {address:#x}); {lanes}", details)
    name, first, start, end = known
    offset = (address - first) // size
    valid = [-((first - start) // size), (end - first) // size - 1]
    details.update(argument=name, offset=offset, valid_offsets=valid)
    where = f"; the address lies in {inside}'s storage" if inside and inside != name else ""
    pointer = f"{name} + {offset}" if offset >= 0 else f"{name} - {-offset}"
    return OutOfBoundsAccess(f"{access} out of bounds in {_LAUNCH.kernel}: {pointer} is outside "
                             f"{name}'s storage (valid offsets {valid[0]}..{valid[1]}, {element} elements)"
                             f"{where}; {lanes}", details)
