"""Where a wrapper's output comes from: the storage ledger and host-side trace of one wrapper call.

A fair wrapper allocates, takes views, makes contiguous copies, reads shapes and strides, and launches
the file's kernels. The ledger holds each call to what follows from that (DESIGN.md, trust clause 2):

* **Known memory.** Every storage a launch or a traced copy reads is an input of the call or was made
  during the call by a traced op (an allocation, a copy). A tensor kept from an earlier call, built
  from host data or made where the dispatch trace cannot see (another thread, modes disabled) is
  *foreign*.
* **Bytes the trace explains.** Each known storage carries a snapshot of its bytes, taken after the
  last traced write to it (an op, or a launch). Bytes that differ at the next launch or when the
  wrapper returns were written outside the trace: through NumPy or ctypes, by a thread, by a kernel
  launched around Triton's JIT.
* **Output written by this call's kernels.** The returned tensor's storage was changed by one of the
  call's launches (or copied by a traced op from storage that was), and still holds those bytes.
* **A value-blind host side.** The trace (each op with its scalar arguments and the shape, strides
  and dtype of its tensors; each launch with its scalar arguments and evaluated grid) must depend on
  the inputs' shapes and scalar values only. The checker compares the traces of calls that differ only
  in tensor values: a host read of tensor values that changes what the host does shows up there.

Each violation is a ``problem``: ``{"kind": ..., "detail": ...}``, judged by the parent as ``cheat``.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

import torch
from triton.runtime.jit import TensorWrapper

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton
    TensorDescriptor = ()

from fusionforge.verify.interpreter import take_stored_widths
from fusionforge.verify.launches import python_function
from fusionforge.verify.policy import COPY_OPS

# ops that read tensor values into the host, or build tensors from host data
HOST_READS = frozenset({"_local_scalar_dense", "item"})
HOST_DATA = frozenset({"lift_fresh", "lift_fresh_copy"})


def describe(value) -> str:
    """A value as the trace shows it: tensors by layout (never by address or contents), scalars as is."""
    if isinstance(value, torch.Tensor):
        return (f"T{tuple(value.shape)}/{tuple(value.stride())}+{value.storage_offset()}"
                f":{str(value.dtype).replace('torch.', '')}@{value.device.type}")
    if TensorDescriptor and isinstance(value, TensorDescriptor):
        return f"D[{describe(value.base)} block {list(value.block_shape)}]"
    if isinstance(value, TensorWrapper):
        return f"R[{describe(value.base)} as {value.dtype}]"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={describe(v)}" for k, v in value.items()) + "}"
    if callable(value):
        return f"<{getattr(value, '__name__', type(value).__name__)}>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def tensors_in(value) -> list[torch.Tensor]:
    """The tensors a launch argument reaches: itself, a descriptor's or a reinterpreting wrapper's base, the items
    of a tuple."""
    if isinstance(value, torch.Tensor):
        return [value]
    if (TensorDescriptor and isinstance(value, TensorDescriptor)) or isinstance(value, TensorWrapper):
        return [value.base]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    return []


def given_widths(value) -> list[tuple[torch.Tensor, int]]:
    """The tensors a launch argument reaches, each with the element width the kernel is given it at (a
    ``triton.reinterpret`` wrapper's dtype, not its base's)."""
    if isinstance(value, TensorWrapper):
        bits = getattr(value.dtype, "primitive_bitwidth", None)
        return [(value.base, max(1, bits // 8) if bits else torch.empty((), dtype=value.dtype).element_size())]
    if isinstance(value, (list, tuple)):
        return [pair for v in value for pair in given_widths(v)]
    return [(t, t.element_size()) for t in tensors_in(value)]


def tensor_arguments(kernel, args: tuple, kwargs: dict) -> list[dict]:
    """Each tensor a launch is given, by the kernel parameter it is bound to, with where its memory lies."""
    signature = inspect.signature(python_function(kernel))
    parameters = {k: v for k, v in kwargs.items() if k in signature.parameters}  # not num_warps and the like
    bound = signature.bind_partial(*args, **parameters).arguments
    return [{"name": name, "data_ptr": t.data_ptr(), "storage": t.untyped_storage().data_ptr(),
             "nbytes": t.untyped_storage().nbytes(), "itemsize": t.element_size(),
             "dtype": str(t.dtype).replace("torch.", "")}
            for name, value in bound.items() for t in tensors_in(value)]


def whole_values(t: torch.Tensor, width: int) -> bool:
    """Whether ``t`` reads values ``width`` bytes wide whole: one block of memory that starts on their edge, in
    elements that each hold whole values or lie within one. (Where it ends does not matter: no later read can
    regroup a block's bytes without starting off an edge.)"""
    size = t.element_size()
    return t.is_contiguous() and (size % width == 0 or width % size == 0) and t.storage_offset() * size % width == 0


# A kernel's Triton IR (GPU): pointer casts, and the element type of what a store or an atomic writes through.
_POINTER_CAST = re.compile(r"= tt\.bitcast [^\n]*?!tt\.ptr<(\w+)>[^\n]*-> [^\n]*!tt\.ptr<(\w+)>")
_STORE_LINE = re.compile(r"\btt\.(?:store|atomic_rmw|atomic_cas|descriptor_(?:store|reduce|scatter))\b[^\n]*")
_STORED_TYPE = re.compile(r"!tt\.ptr<(\w+)>|!tt\.tensordesc<tensor<[\dx]*x(\w+)>")
ANY_WIDTH = frozenset({1, 2, 4, 8})


def width_of(type_name: str) -> int:
    """The bytes of a Triton IR element type ("bf16": 2, "f8E4M3FN": 1, "i1": 1, stored as a byte)."""
    return max(1, int(re.search(r"\d+", type_name).group()) // 8)


def cast_store_widths(ttir: str) -> frozenset[int]:
    """The widths a compiled kernel may store values at, where its pointers' element types can differ from its
    arguments': any width when it has inline assembly (which may store through any pointer); every store's and
    atomic's element width when it casts a pointer (``tt.bitcast`` to another pointer type, besides Triton's own
    bool -> i8, or ``tt.int_to_ptr``); empty when none of these (each argument keeps the width it was given)."""
    if "tt.elementwise_inline_asm" in ttir:
        return ANY_WIDTH
    if "tt.int_to_ptr" not in ttir and all(pair == ("i1", "i8") for pair in _POINTER_CAST.findall(ttir)):
        return frozenset()
    return frozenset(width_of(a or b) for line in _STORE_LINE.findall(ttir) for a, b in _STORED_TYPE.findall(line))


@dataclass
class Entry:
    snapshot: torch.Tensor  # the storage's bytes after the last traced write
    origin: str
    input_index: int | None = None
    kernel_written: bool = False
    widths: frozenset[int] = field(default_factory=frozenset)  # the bytes a value may have, as last written: made,
    # received or copied at, or stored at by a kernel; several where which one wrote the memory is unknown (a launch
    # given it at several widths, a compiled kernel that casts pointers)

    def width_words(self) -> str:
        """The values' width in words, for a problem's sentence."""
        return " or ".join(f"{w}-byte" for w in sorted(self.widths))

    def read_whole(self, t: torch.Tensor) -> bool:
        """Whether reading ``t`` takes these values whole: at their width, or as a block that starts on their edge."""
        return all(t.element_size() == w or whole_values(t, w) for w in self.widths)


class Ledger:
    """The storages one wrapper call may read or return, with their bytes and where they came from."""

    def __init__(self, device: str, launch_log: list | None = None, stores_recorded: bool = False) -> None:
        self.device = device
        self.stores_recorded = stores_recorded  # launches run by the CPU interpreter, which records each store
        self.launch_log = launch_log  # when given: each launch's tensor arguments (for compute-sanitizer's reports)
        self.entries: dict[tuple[str, int], Entry] = {}
        self.problems: list[dict] = []
        self.trace: list[str] = []
        self._launched: list[tuple[torch.Tensor, int]] = []  # each tensor of the launch, at its given width
        self._grid = None

    # -- storages ---------------------------------------------------------------------------------
    @staticmethod
    def _key(t: torch.Tensor) -> tuple[str, int]:
        return str(t.device), t.untyped_storage().data_ptr()

    @staticmethod
    def _bytes(t: torch.Tensor) -> torch.Tensor:
        """Every byte of ``t``'s storage as a flat uint8 tensor (a view, not a copy)."""
        return torch.empty(0, dtype=torch.uint8, device=t.device).set_(t.untyped_storage())

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def problem(self, kind: str, detail: str) -> None:
        if not any(p["kind"] == kind and p["detail"] == detail for p in self.problems):
            self.problems.append({"kind": kind, "detail": detail})

    def register(self, t: torch.Tensor, origin: str, kernel_written: bool = False,
                 input_index: int | None = None, widths: frozenset[int] | None = None) -> None:
        """Know ``t``'s storage from now on, its values ``widths`` bytes each (``t``'s own by default; none for memory
        that holds no values yet)."""
        if t.untyped_storage().nbytes() == 0:
            return
        self.entries[self._key(t)] = Entry(self._bytes(t).clone(), origin, input_index, kernel_written,
                                           frozenset({t.element_size()}) if widths is None else frozenset(widths))

    def add_inputs(self, inputs: list) -> None:
        for k, value in enumerate(inputs):
            if isinstance(value, torch.Tensor):
                self.register(value, f"input {k}", input_index=k)

    def entry(self, t: torch.Tensor) -> Entry | None:
        return self.entries.get(self._key(t))

    def verify(self, t: torch.Tensor, reader: str) -> Entry | None:
        """``t``'s entry when its storage is known and holds the bytes the trace says; else a problem.
        ``reader`` opens the problem's sentence ("the launch of k is given", "aten.copy_ reads")."""
        if t.untyped_storage().nbytes() == 0:
            return None
        entry = self.entry(t)
        if entry is None:
            self.problem("foreign", f"{reader} a tensor {describe(t)} that this call neither received nor made with "
                                    "a traced op (kept from an earlier call, built from host data, or made outside "
                                    "the dispatch trace)")
            return None
        if not torch.equal(self._bytes(t), entry.snapshot):
            self.problem("untraced_write", f"{reader} {entry.origin} ({describe(t)}), whose bytes changed since the "
                                           "last traced op or launch that wrote it")
        return entry

    def launched_bytes(self) -> dict[tuple[str, int], torch.Tensor]:
        """A copy of each storage the launch under way was given: what the file's code that Triton runs during the
        launch (a grid, a heuristic, a hook) must leave as it found it (``check_unchanged``)."""
        self._sync()
        return {self._key(t): self._bytes(t).clone() for t, _ in self._launched if self.entry(t) is not None}

    def check_unchanged(self, before: dict[tuple[str, int], torch.Tensor], what: str) -> None:
        """A problem for each storage of ``before`` whose bytes ``what`` changed but by a traced op (which retook its
        snapshot): the file's code wrote the memory on the host, and the launch would take the credit."""
        self._sync()
        for t, _ in self._launched:
            old, entry = before.pop(self._key(t), None), self.entry(t)
            if old is None or entry is None:
                continue
            now = self._bytes(t)
            if not torch.equal(now, old) and not torch.equal(now, entry.snapshot):
                self.problem("untraced_write", f"{what} changed the bytes of {entry.origin} ({describe(t)}) with no "
                                               "traced op, during the launch it is given to")

    # -- traced ops -------------------------------------------------------------------------------
    def before_resize(self, func, t: torch.Tensor) -> None:
        """resize_ keeps a tensor's bytes (copies them when it grows): its memory must be known already."""
        if self.entry(t) is None and t.untyped_storage().nbytes() > 0:
            self.problem("foreign", f"{func} resizes a tensor {describe(t)} that this call neither received "
                                    "nor made")

    def after_op(self, func, args: tuple, kwargs: dict, out, step: bool = True) -> None:
        """Record a wrapper op (already run): what it read and what it wrote, and its trace line unless
        ``step`` is False (an op of an autotuning trial: only the first call with a new key makes those)."""
        name = func.overloadpacket.__name__
        if step:
            arguments = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
            self.trace.append(f"{func}({', '.join(arguments)})")
        if name in HOST_READS:
            self.problem("host_read", f"{func} reads a tensor's value into the host (.item())")
            return
        if name in HOST_DATA:
            self.problem("host_data", f"{func}: a tensor is built from host data (torch.tensor, "
                                      "torch.from_numpy, torch.as_tensor)")
            return
        schema = func._schema
        written, read = [], []
        for argument, value in zip(schema.arguments, list(args) + [kwargs.get(a.name) for a in
                                                                    schema.arguments[len(args):]]):
            for t in tensors_in(value):
                is_write = argument.alias_info is not None and argument.alias_info.is_write
                (written if is_write else read).append(t)
        aliasing = any(r.alias_info is not None for r in schema.returns)
        outputs = [] if aliasing else tensors_in(out if isinstance(out, (list, tuple)) else [out])
        if not written and not outputs:
            return  # a view or a metadata op: no bytes move
        if self.device == "cuda":  # a copy between the host and the GPU (a CPU allocation alone is no copy)
            reads = {t.device.type for t in read}
            writes = {t.device.type for t in written + outputs}
            if "cuda" in reads and "cpu" in writes:
                self.problem("host_read", f"{func} copies tensor values from the GPU to the host")
            if "cpu" in reads and "cuda" in writes:
                self.problem("host_data", f"{func} copies host data to the GPU")
        sources = [e for e in (self.verify(t, f"{func} reads") for t in read) if e is not None]
        kept: frozenset[int] = frozenset()  # a byte-for-byte copy of whole values at another width, into whole
        # values: their widths
        if name in COPY_OPS:  # values move whole: read at the width they were written at, or as whole runs of bytes
            for t in read:
                entry = self.entry(t)
                if entry is None or entry.widths == {t.element_size()}:
                    continue
                if entry.read_whole(t) and all(d.dtype == t.dtype and entry.read_whole(d) for d in written + outputs):
                    kept |= entry.widths
                else:
                    self.problem("reinterpreted", f"{func} reads {entry.origin}, whose values are "
                                                  f"{entry.width_words()}, as {describe(t)}: a conversion done by "
                                                  "PyTorch")
        from_kernels = any(e.kernel_written for e in sources)
        if name == "set_":  # the tensor now views a storage it names: that storage must be known
            for t in written:
                if self.entry(t) is None:
                    self.problem("foreign", f"{func} attaches a storage that this call did not make")
            return
        if name == "resize_":  # may move the tensor to new memory
            for t in written:
                if self.entry(t) is None:
                    self.register(t, f"a tensor resized by {func}")
            return
        for t in outputs:  # an allocation (no tensor read) holds no values yet
            self.register(t, f"a tensor made by {func}", kernel_written=from_kernels,
                          widths=kept or (None if read else frozenset()))
        for t in written:
            entry = self.entry(t)
            if entry is None:
                self.problem("foreign", f"{func} writes into a tensor {describe(t)} that this call neither "
                                        "received nor made (a buffer kept from an earlier call)")
            else:  # an input written in place stays an input (the mutation check names it); a fill of a constant
                # keeps the values' width
                self.register(t, entry.origin, kernel_written=entry.input_index is None and (
                    entry.kernel_written or from_kernels), input_index=entry.input_index,
                    widths=entry.widths | (kept or {t.element_size()}) if read else entry.widths)

    # -- launches ---------------------------------------------------------------------------------
    def before_launch(self, kernel, args: tuple, kwargs: dict) -> dict:
        """Check what the launch reads; trace it. Returns the kwargs to launch with (the grid recorded)."""
        name = python_function(kernel).__name__
        shown = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}
        arguments = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in shown.items()]
        grid = kwargs.get("grid")
        self.trace.append(f"launch {name}({', '.join(arguments)})"
                          + ("" if callable(grid) else f" grid {describe(grid)}"))
        self._sync()
        take_stored_widths()  # the CPU interpreter's record starts with this launch
        self._launched = [pair for v in (*args, *shown.values()) for pair in given_widths(v)]
        if self.launch_log is not None:
            self.launch_log.append({"kernel": name, "args": tensor_arguments(kernel, args, shown)})
        for t, _ in self._launched:
            self.verify(t, f"the launch of {name} is given")
        if callable(grid):
            def recorded(meta, _grid=grid):
                self._grid = _grid(meta)
                return self._grid
            kwargs = {**kwargs, "grid": recorded}
        self._grid = None
        return kwargs

    def after_launch(self, compiled=None) -> None:
        """Storages whose bytes the launch changed are kernel-written, their snapshots retaken, and the widths their
        values were stored at added to theirs (a launch may write part of a storage). On the CPU the interpreter
        saw each store's width (float32 stored through a cast pointer into memory given as bfloat16: 4 bytes; a
        storage changed with no store recorded: any width). On a GPU a value is as wide as the launch was given its
        memory (float32 written into memory made as int16: 4 bytes; given at several widths: any of them), or as
        any store of the ``compiled`` kernel where it casts pointers (``cast_store_widths``)."""
        if self._grid is not None:
            self.trace.append(f"  grid {describe(tuple(self._grid))}")
        self._sync()
        stored = take_stored_widths()
        asm = getattr(compiled, "asm", None)
        cast = cast_store_widths(asm["ttir"]) if isinstance(asm, dict) and "ttir" in asm else frozenset()
        given: dict[tuple[str, int], set[int]] = {}
        for t, width in self._launched:
            given.setdefault(self._key(t), set()).add(width)
        for t, _ in self._launched:
            entry = self.entry(t)
            if entry is not None and not torch.equal(self._bytes(t), entry.snapshot):
                entry.snapshot = self._bytes(t).clone()
                entry.kernel_written = entry.kernel_written or entry.input_index is None
                key = self._key(t)
                unseen = ANY_WIDTH if self.stores_recorded else frozenset()  # changed, yet no store was recorded
                entry.widths |= stored.get(key[1]) or given[key] | cast | unseen
        self._launched = []

    # -- the result -------------------------------------------------------------------------------
    def check_output(self, out) -> None:
        """The returned tensor (each of a returned tuple's): known, written by this call's kernels, unchanged
        since."""
        if type(out) is tuple:  # noqa: E721 - as the runner saves it
            for item in out:
                self.check_output(item)
            return
        if not isinstance(out, torch.Tensor):
            return
        self._sync()
        entry = self.entry(out)
        if entry is None:
            self.problem("output_foreign", f"the returned tensor {describe(out)} was neither made during this call "
                                           "by a traced op nor written by one of its launches (a tensor kept from "
                                           "an earlier call, or made outside the dispatch trace)")
        elif not torch.equal(self._bytes(out), entry.snapshot):
            self.problem("output_untraced_write", "the returned tensor's bytes changed after the last launch or "
                                                  "traced op that wrote it (written outside the trace)")
        elif not entry.kernel_written:
            self.problem("output_not_kernel", f"no launch of this call wrote the returned tensor ({entry.origin})")
        elif not entry.read_whole(out):
            self.problem("output_reinterpreted", f"the returned tensor {describe(out)} views {entry.origin}, whose "
                                                 f"values are {entry.width_words()}: its values taken apart")
