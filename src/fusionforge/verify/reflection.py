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
* modules that inspect or rewrite the running program (``inspect``, ``gc``, ``ctypes``, ``importlib``,
  ``operator``, ``pickle``, ...) and fusionforge itself;
* unpickling switched on (``weights_only=``, ``allow_pickle=``), which runs code a file carries as bytes.

The runtime defences (the host guard's audit hooks, the checks of replaced functions, the ledger) stay the first
line: the screen is reported only for a file that passed them.
"""

from __future__ import annotations

import ast

PUBLIC_DUNDERS = frozenset({"__name__", "__qualname__", "__doc__", "__module__", "__class__", "__init__"})
STATE_ATTRIBUTES = frozenset({"cell_contents", "f_locals", "f_globals", "f_back", "modules"})
BY_NAME = frozenset({"getattr", "setattr", "delattr", "vars", "globals", "locals", "eval", "exec", "compile",
                     "__import__", "__builtins__", "breakpoint"})
PROGRAM_MODULES = frozenset({"fusionforge", "inspect", "gc", "ctypes", "importlib", "builtins", "operator",
                             "string", "types", "pickle", "marshal", "copyreg", "dill", "cloudpickle", "dis",
                             "code", "codeop", "runpy", "pkgutil", "sysconfig", "tracemalloc", "faulthandler"})
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
    if parts[0] in PROGRAM_MODULES:
        return f"imports {path}"
    return next((f"imports the private module {path}" for part in parts if part.startswith("_")), None)


def reflective_access(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each place the source reaches past public APIs, in source order."""
    found: list[tuple[int, str]] = []
    judged: set[int] = set()  # getattr names judged with their call
    for node in ast.walk(tree):
        problem = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            judged.add(id(node.func))
            name = node.args[1] if len(node.args) >= 2 else None
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                problem = attribute_problem(name.value)
            else:
                problem = "fetches an attribute by a computed name (getattr)"
        elif isinstance(node, ast.Attribute):
            problem = attribute_problem(node.attr)
        elif isinstance(node, ast.Name) and node.id in BY_NAME and id(node) not in judged:
            problem = f"uses {node.id}"
        elif isinstance(node, ast.Import):
            problem = next(filter(None, (_module_problem(a.name) for a in node.names)), None)
        elif isinstance(node, ast.ImportFrom):
            problem = _module_problem(node.module or "") or next(
                filter(None, (attribute_problem(a.name) for a in node.names)), None)
        elif isinstance(node, ast.keyword) and node.arg in UNPICKLING:
            problem = f"switches on unpickling ({node.arg}=)"
        if problem:
            found.append((getattr(node, "lineno", 0), problem))
    return sorted(found)
