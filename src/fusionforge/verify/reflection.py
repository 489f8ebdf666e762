"""What no fair kernel file does: reach past the objects it is handed into the running program.

The checker's child runs the file in one process with the checker's own objects: the launch monitor, the
dispatch trace, the ledger. Python raises no audit event when code reads a function's closure or globals, a
cell's contents or an object's ``__dict__``, so a file could find those objects through the functions the checker
patches (``JITFunction.run.__closure__``) and rewrite what they record: a launch that never ran, an empty list of
problems, a ghost replay it can see coming. A fair file uses public APIs only, so its source is screened, and a file
that passes every other check but reaches in any of these ways is a cheat:

* an attribute with a dunder name other than ``__name__``, ``__qualname__``, ``__doc__``, ``__module__``,
  ``__class__`` and ``__init__`` (a module's ``super().__init__()``): ``f.__closure__``, ``m.__dict__``,
  ``type(x).__mro__``; or a private one (``torch._C``, ``sys._getframe``), also in a ``from ... import`` or a
  module path;
* the attributes that hold a program's state whatever object has them (``cell_contents``, ``f_locals``,
  ``f_globals``, ``f_back``, ``modules``);
* the builtins that fetch, set or run by name (``getattr`` with a name that is not a string literal passing the
  rules above, ``setattr``, ``delattr``, ``vars``, ``globals``, ``locals``, ``eval``, ``exec``, ``compile``,
  ``__import__``, ``breakpoint``);
* an import of a module outside those kernel files use (torch, triton, math, numpy, functools, itertools,
  typing, collections, dataclasses, enum, numbers, abc, contextlib, warnings, random, os, sys, time): the rest
  (inspect, gc, ctypes, importlib, operator, pydoc, timeit, weakref, signal, pickle, ..., fusionforge itself) include
  ways to fetch objects by dotted name, run code given as text or run code later, unwatched;
* within those, the parts that do the same (``torch.utils.benchmark`` runs code given as text,
  ``typing.get_type_hints`` evaluates it; ``sys.addaudithook``, ``sys.settrace``; ``torch.overrides``' function
  modes, which see every torch call), the ones that tell the checker's
  process from the timer's (``sys.argv``), and files (``open``, ``torch.save``, ``torch.load``, ``os.remove``): the
  checker's child keeps its results in files;
* of Triton, anything but its kernel API (``TRITON_API``: the language but its core and semantics, the decorators,
  the host helpers, the TMA descriptor, the device's properties): ``triton.runtime``'s JIT and interpreter are what
  the checker patches, and hold helpers that read a function's closure; the JIT's machinery by name on any object
  (``add_pre_run_hook``, ``get_capture_scope``, ``JITCallable``), and ``runtime``, ``compiler``, ``overrides``, ...
  through a name no import binds (a module handed around as an argument);
* an assignment to an attribute of an imported module or class (``tl.erf = ...``), and a class that defines a
  protocol through which NumPy or torch reads its memory or hands it their calls (``__array_interface__``,
  ``__torch_function__``, ``__torch_dispatch__``, ...);
* unpickling switched on (``weights_only=``, ``allow_pickle=``), which runs code a file carries as bytes;
* in the PYTHON and TRITON sections, a clock (``time.perf_counter``, a CUDA event's ``elapsed_time``, a stream's or
  event's ``query``): an implementation needs none, and a clock tells a watched call from a timed one.

The file's ``if __name__ == "__main__":`` block is not screened: the checker never runs it.

The runtime defences (the host guard's audit hooks, the checks of replaced functions, the ledger) stay the first
line: the screen is reported only for a file that passed them.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
import sys
import types

PUBLIC_DUNDERS = frozenset({"__name__", "__qualname__", "__doc__", "__module__", "__class__", "__init__"})
STATE_ATTRIBUTES = frozenset({"cell_contents", "f_locals", "f_globals", "f_back", "modules"})
BY_NAME = frozenset({"getattr", "setattr", "delattr", "vars", "globals", "locals", "eval", "exec", "compile",
                     "__import__", "__builtins__", "breakpoint", "open"})
KERNEL_MODULES = frozenset({"torch", "triton", "math", "numpy", "functools", "itertools", "typing", "collections",
                            "dataclasses", "enum", "numbers", "abc", "contextlib", "warnings", "random", "os", "sys",
                            "time"})
REACHING_PATHS = ("torch.utils.benchmark", "torch.hub", "torch.package", "torch.utils.cpp_extension", "torch.fx",
                  "torch.save", "torch.load", "typing.get_type_hints", "sys.addaudithook", "sys.settrace",
                  "sys.setprofile", "sys.monitoring", "sys.argv", "sys.orig_argv", "os.open", "os.remove",
                  "os.unlink", "os.rename", "os.replace", "os.chdir", "os.listdir", "os.scandir", "os.walk",
                  "os.system", "os.popen", "os.kill", "torch.overrides")
# modules outside KERNEL_MODULES that other modules hold as attributes (``dataclasses.inspect``,
# ``dataclasses.builtins``, ``typing.operator``): named as an attribute of anything, they are reached
MODULE_ATTRIBUTES = frozenset({"inspect", "builtins", "operator", "gc", "ctypes", "importlib", "pydoc", "pickle",
                               "marshal", "runpy", "timeit", "cProfile", "profile", "pdb", "bdb", "shelve", "weakref",
                               "signal", "atexit", "traceback", "linecache", "dis", "codeop", "copyreg", "sysconfig",
                               "tracemalloc", "faulthandler", "dill", "cloudpickle", "_thread", "threading"})
BY_NAME_FUNCTIONS = frozenset(getattr(builtins, name) for name in BY_NAME if hasattr(builtins, name))
# Triton as kernel files use it: the language, the decorators and their configs, the host helpers, the TMA descriptor
# and allocator, the device's properties. The rest (triton.runtime's JIT and interpreter, the compiler, knobs) holds
# the machinery the checker patches and the helpers that read a function's closure (JITCallable.get_capture_scope).
TRITON_API = ("triton.language", "triton.jit", "triton.autotune", "triton.heuristics", "triton.Config", "triton.cdiv",
              "triton.next_power_of_2", "triton.set_allocator", "triton.tools.tensor_descriptor", "triton.testing",
              "triton.runtime.driver.active.get_active_torch_device", "triton.runtime.driver.active.get_current_device",
              "triton.runtime.driver.active.utils.get_device_properties")
# Inside the language: its core's re-exports of the JIT (JITCallable) and the code generator's semantics.
TRITON_INTERNALS = ("triton.language.core", "triton.language.semantic")
# Names of the JIT's machinery, refused on any object (a kernel's ``add_pre_run_hook`` runs a function inside each
# launch, a built-in one with no frame of the file's; ``JITCallable(f).get_capture_scope()`` reads f's closure);
# with the module names under them, also through a name no import binds (a module passed as an argument).
JIT_MACHINERY = frozenset({"add_pre_run_hook", "pre_run_hooks", "get_capture_scope", "JITCallable", "JITFunction",
                           "InterpretedFunction"})
MACHINERY_MODULES = frozenset({"runtime", "compiler", "knobs", "overrides", "interpreter"})
# Protocols through which another library reads an object's memory or takes over its calls: a class of the file's
# that defines one hands tensors' memory to NumPy unseen, or runs code inside torch's dispatch.
PROTOCOL_DUNDERS = frozenset({"__array_interface__", "__array_struct__", "__cuda_array_interface__", "__array__",
                              "__array_ufunc__", "__array_function__", "__dlpack__", "__torch_function__",
                              "__torch_dispatch__"})
FORMAT_FIELD = re.compile(r"\{[^{}]*[.\[]\s*_")  # "{0.__closure__}".format(f): an attribute path in a format string
CLOCKS = ("time.time", "time.perf_counter", "time.monotonic", "time.process_time", "time.thread_time",
          "torch.cuda.Event")
CLOCK_ATTRIBUTES = frozenset({"elapsed_time", "query"})
UNPICKLING = frozenset({"weights_only", "allow_pickle"})


def attribute_problem(name: str) -> str | None:
    """Why reading an attribute of this name reaches past public APIs, or None."""
    if name.startswith("__") and name.endswith("__"):
        return None if name in PUBLIC_DUNDERS else f"reads {name}"
    if name.startswith("_"):
        return f"reads the private attribute {name}"
    if name in STATE_ATTRIBUTES:
        return f"reads {name}, the running program's state"
    return None


def _module_problem(path: str) -> str | None:
    parts = path.split(".")
    if parts[0] not in KERNEL_MODULES:
        return f"imports {path}"
    private = next((f"imports the private module {path}" for part in parts if part.startswith("_")), None)
    return private or _path_problem(path, imported=True)


def _path_problem(path: str, imported: bool = False) -> str | None:
    """Why naming this dotted path (a module's attribute, resolved through the file's imports) reaches too far;
    ``imported``: named by an import, where the modules on the way to Triton's API may be named too."""
    reaching = next((f"uses {reaching}" for reaching in REACHING_PATHS
                     if path == reaching or path.startswith(reaching + ".")), None)
    if reaching or path == "triton" or not path.startswith("triton."):
        return reaching
    internal = any(path == inner or path.startswith(inner + ".") for inner in TRITON_INTERNALS)
    if not internal and any(path == api or path.startswith(api + ".") or imported and api.startswith(path + ".")
           for api in TRITON_API):
        return None
    return f"uses {path}, outside Triton's kernel API"


def _resolved_problem(path: str) -> str | None:
    """Walk ``path`` (rooted at an allowed module) through the attributes it names, statically (no code of theirs
    runs; only modules already imported are entered): a step that is a module outside KERNEL_MODULES, or that is
    getattr, eval and their like, reaches too far."""
    parts = path.split(".")
    obj = sys.modules.get(parts[0])
    if parts[0] not in KERNEL_MODULES or obj is None:
        return None
    for k, part in enumerate(parts[1:], 2):
        try:
            obj = inspect.getattr_static(obj, part)
        except AttributeError:
            obj = sys.modules.get(".".join(parts[:k]))
            if obj is None:
                return None
        where = ".".join(parts[:k])
        if isinstance(obj, types.ModuleType) and obj.__name__.split(".")[0] not in KERNEL_MODULES:
            return f"reaches the module {obj.__name__} through {where}"
        try:
            fetches = obj in BY_NAME_FUNCTIONS
        except TypeError:  # unhashable
            fetches = False
        if fetches:
            return f"uses {obj.__name__} through {where}"
    return None


def _dotted(node: ast.AST, imported: dict[str, str]) -> str | None:
    """``a.b.c`` for an attribute chain on a name, the name resolved through the file's imports."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([imported.get(node.id, node.id), *reversed(parts)])


def _screened(tree: ast.AST) -> list[ast.AST]:
    """The module's statements but a last one that is exactly ``if __name__ == "__main__":`` with no else."""
    body = list(tree.body) if isinstance(tree, ast.Module) else [tree]
    last = body[-1] if body else None
    if (isinstance(last, ast.If) and not last.orelse and isinstance(last.test, ast.Compare)
            and isinstance(last.test.left, ast.Name) and last.test.left.id == "__name__"
            and len(last.test.ops) == 1 and isinstance(last.test.ops[0], ast.Eq)
            and isinstance(last.test.comparators[0], ast.Constant) and last.test.comparators[0].value == "__main__"):
        body.pop()
    return body


def reflective_access(tree: ast.AST, implementation: list[tuple[int, int]] | None = None) -> list[tuple[int, str]]:
    """(line, what) for each place the source reaches past public APIs, in source order; ``implementation``: the
    (first, last) lines of the PYTHON and TRITON sections, where clocks count too (none given: nowhere)."""
    found: list[tuple[int, str]] = []
    judged: set[int] = set()  # getattr names judged with their call; chains judged whole
    nodes = [node for statement in _screened(tree) for node in ast.walk(statement)]
    imported: dict[str, str] = {}  # a name an import binds -> the module or attribute it names
    for node in nodes:
        if isinstance(node, ast.Import):
            imported.update({a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0]
                             for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    for node in nodes:
        problem = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            judged.add(id(node.func))
            name = node.args[1] if len(node.args) >= 2 else None
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                machinery = name.value in JIT_MACHINERY | MACHINERY_MODULES
                problem = attribute_problem(name.value) or (
                    f"reaches {name.value}, the JIT's machinery" if machinery else None)
            else:
                problem = "fetches an attribute by a computed name (getattr)"
        elif isinstance(node, ast.Attribute) and id(node) not in judged:
            chain, names = node, []
            while isinstance(chain, ast.Attribute):  # the whole chain at once, its inner attributes with it
                judged.add(id(chain))
                names.append(chain.attr)
                chain = chain.value
            judged.add(id(chain))  # its root name too
            problem = next(filter(None, map(attribute_problem, reversed(names))), None)
            problem = problem or next((f"reaches the module {name}" for name in reversed(names)
                                       if name in MODULE_ATTRIBUTES), None)
            path = _dotted(node, imported)
            if problem is None and path is not None:
                problem = _path_problem(path) or _resolved_problem(path)
            aliased = not (isinstance(chain, ast.Name) and chain.id in imported)
            problem = problem or next((f"reaches {name}, the JIT's machinery" for name in reversed(names)
                                       if name in JIT_MACHINERY or aliased and name in MACHINERY_MODULES), None)
            if (problem is None and isinstance(node.ctx, (ast.Store, ast.Del)) and isinstance(chain, ast.Name)
                    and chain.id in imported):
                problem = f"replaces {path}, a library's attribute"
            if problem is None and any(first <= node.lineno <= last for first, last in implementation or []):
                clock = next((c for c in CLOCKS if path is not None and (path + ".").startswith(c + ".")), None)
                clock = clock or next((f".{a}" for a in names if a in CLOCK_ATTRIBUTES), None)
                problem = f"reads a clock ({clock}) in its implementation" if clock else None
        elif isinstance(node, ast.Name) and id(node) not in judged:
            problem = f"uses {node.id}" if node.id in BY_NAME else _path_problem(imported.get(node.id, ""))
            if problem is None and isinstance(node.ctx, ast.Store) and node.id in PROTOCOL_DUNDERS:
                problem = f"defines {node.id}, a protocol that hands its memory or its calls to another library"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in PROTOCOL_DUNDERS:
            problem = f"defines {node.name}, a protocol that hands its memory or its calls to another library"
        elif isinstance(node, ast.Import):
            problem = next(filter(None, (_module_problem(a.name) for a in node.names)), None)
        elif isinstance(node, ast.ImportFrom):
            problem = _module_problem(node.module or "") or next(
                filter(None, (attribute_problem(a.name) or _path_problem(f"{node.module}.{a.name}", imported=True)
                              or (f"reaches {a.name}, the JIT's machinery" if a.name in JIT_MACHINERY else None)
                              or _resolved_problem(f"{node.module}.{a.name}")
                              or (f"reaches the module {a.name}" if a.name in MODULE_ATTRIBUTES else None)
                              for a in node.names)), None)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and FORMAT_FIELD.search(node.value):
            problem = "formats a private or dunder attribute by a format string's field"
        elif isinstance(node, ast.Constant) and node.value in PROTOCOL_DUNDERS:
            problem = f"names {node.value}, a protocol that hands memory or calls to another library"
        elif isinstance(node, ast.keyword) and node.arg in UNPICKLING:
            problem = f"switches on unpickling ({node.arg}=)"
        if problem:
            found.append((getattr(node, "lineno", 0), problem))
    return sorted(found)
