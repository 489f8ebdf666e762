"""The kernel file ``NNN_fused_kernels.py``: parse, validate and render the seed format.

Layout, in order::

    \"\"\"Fused Kernels: <description>\"\"\"
    <imports>
    # <PYTHON>
    TASK = {...}                      # optional: the task the file implements (JSON-able literal)
    def fused_kernel_pytorch(*args): ...
    # </PYTHON>
    # <TRITON>
    @triton.jit
    def fused_kernel_triton(...): ...  # one or more kernels, this one among them
    def fused_kernel_triton_wrapper(*args): ...   # same parameters as fused_kernel_pytorch
    # </TRITON>
    # <TEST>
    def get_inputs(): ...             # optional when TASK is given
    def test_performance(pytorch_func, triton_func, inputs, num_runs=50): ...
    # </TEST>
    if __name__ == '__main__': ...

Validation is static (``ast``; the file is never imported here) and names what is wrong and where.
``load_module`` imports a file, for the processes that run one (the checker's and the timer's children,
tests and benchmark scripts).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

SECTIONS = ("PYTHON", "TRITON", "TEST")
DOCSTRING_PREFIX = "Fused Kernels:"
FILE_NAME = re.compile(r"^(\d{3,})_fused_kernels\.py$")
JSON_WORDS = {"false": "False", "null": "None", "true": "True"}
NOT_SEED_FORMAT = ("not a kernel file in the seed format: it has no first line \"\"\"Fused Kernels: ...\"\"\" "
                   "and no # <PYTHON>, # <TRITON> or # <TEST> section (`fusionforge task --current --skeleton` "
                   "writes the handed-out task's file to fill in)")
MAIN_GUARD = re.compile(r"""^if\s+__name__\s*==\s*(['"])__main__\1\s*:""")


@dataclass
class Problem:
    """A format problem: what is wrong, and the 1-based line it concerns (None: the whole file)."""

    message: str
    line: int | None = None
    category: str = "format"  # or "syntax"


@dataclass
class KernelFile:
    path: Path
    text: str
    description: str = ""
    sections: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (first, last) line
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    kernels: list[str] = field(default_factory=list)  # @triton.jit functions in the TRITON section
    task: dict | None = None
    problems: list[Problem] = field(default_factory=list)
    tree: ast.Module | None = None  # the parsed source, when it parses

    @property
    def ok(self) -> bool:
        return not self.problems

    def implementation_at(self, line: int | None) -> str:
        """Which implementation a line belongs to: PyTorch (the PYTHON section), Triton (TRITON) or Both."""
        return {"PYTHON": "PyTorch", "TRITON": "Triton"}.get(self.section_of(line or 0), "Both")

    def section_of(self, line: int) -> str | None:
        for name, (first, last) in self.sections.items():
            if first <= line <= last:
                return name
        return None

    def function_at(self, line: int) -> str | None:
        for name, node in self.functions.items():
            if node.lineno <= line <= (node.end_lineno or node.lineno):
                return name
        return None


def _is_triton_jit(node: ast.FunctionDef) -> bool:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if ast.unparse(target) in ("triton.jit", "jit"):
            return True
    return False


def _params(node: ast.FunctionDef) -> list[str]:
    a = node.args
    names = [p.arg for p in a.posonlyargs + a.args]
    if a.vararg:
        names.append("*" + a.vararg.arg)
    return names


def parse(path: str | Path) -> KernelFile:
    """Read and statically validate a kernel file; ``problems`` lists every format error found."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    kf = KernelFile(path=path, text=text)
    lines = text.splitlines()
    if not text.strip():
        kf.problems.append(Problem("the file is empty"))
        return kf
    if not re.search(r"Fused Kernels:|^#\s*</?(PYTHON|TRITON|TEST)>", text, re.MULTILINE):
        kf.problems.append(Problem(NOT_SEED_FORMAT))
        return kf

    first = lines[0].strip() if lines else ""
    match = re.match(r'^("""|\'\'\')\s*Fused Kernels:\s*(.*?)\s*\1$', first)
    if match:
        kf.description = match.group(2)
    else:
        kf.problems.append(Problem(f'the first line must be the docstring """{DOCSTRING_PREFIX} <description>"""', 1))

    positions: dict[str, list[int]] = {}
    for k, line in enumerate(lines, start=1):
        m = re.match(r"^#\s*<(/?)(PYTHON|TRITON|TEST)>\s*$", line.strip())
        if m:
            positions.setdefault(("/" if m.group(1) else "") + m.group(2), []).append(k)
    order = []
    for name in SECTIONS:
        for marker in (name, "/" + name):
            found = positions.get(marker, [])
            if not found:
                kf.problems.append(Problem(f"missing marker '# <{marker}>'"))
            elif len(found) > 1:
                kf.problems.append(Problem(f"marker '# <{marker}>' appears {len(found)} times", found[1]))
            else:
                order.append((found[0], marker))
        if positions.get(name) and positions.get("/" + name):
            kf.sections[name] = (positions[name][0], positions["/" + name][0])
    expected = [m for n in SECTIONS for m in (n, "/" + n) if len(positions.get(m, [])) == 1]
    if [m for _, m in sorted(order)] != expected:
        got = ", ".join(f"<{m}> (line {ln})" for ln, m in sorted(order))
        kf.problems.append(Problem(f"markers out of order: expected PYTHON, TRITON, TEST each opened and closed "
                                   f"in turn; found {got}", sorted(order)[0][0] if order else None))
    main_lines = [k for k, line in enumerate(lines, start=1) if MAIN_GUARD.match(line)]
    test_end = kf.sections.get("TEST", (0, 0))[1]
    if not main_lines:
        kf.problems.append(Problem("missing main block \"if __name__ == '__main__':\""))
    elif test_end and main_lines[0] < test_end:
        kf.problems.append(Problem("the main block must come after '# </TEST>'", main_lines[0]))

    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as e:
        kf.problems.insert(0, Problem(f"{type(e).__name__}: {e.msg}", e.lineno, "syntax"))
        return kf
    kf.tree = tree

    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            kf.functions[node.name] = node
            if _is_triton_jit(node) and kf.section_of(node.lineno) == "TRITON":
                kf.kernels.append(node.name)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TASK" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                json_words = sorted({n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
                                    & set(JSON_WORDS))
                kf.problems.append(Problem(
                    f"TASK is JSON ({', '.join(json_words)}), not Python: write "
                    f"{', '.join(JSON_WORDS[w] for w in json_words)}; `fusionforge task --current --skeleton` "
                    "writes the file with TASK as a Python literal" if json_words
                    else "TASK must be a literal dict (JSON-able)", node.lineno))
            else:
                if isinstance(value, dict):
                    kf.task = value
                else:
                    kf.problems.append(Problem("TASK must be a dict", node.lineno))

    def need(name: str, section: str) -> ast.FunctionDef | None:
        node = kf.functions.get(name)
        if node is None:
            kf.problems.append(Problem(f"missing function {name}() in the {section} section",
                                       kf.sections.get(section, (None,))[0]))
        elif kf.section_of(node.lineno) != section:
            kf.problems.append(Problem(f"{name}() must be defined in the {section} section", node.lineno))
        return node

    pytorch = need("fused_kernel_pytorch", "PYTHON")
    wrapper = need("fused_kernel_triton_wrapper", "TRITON")
    perf = need("test_performance", "TEST")
    if "fused_kernel_triton" not in kf.kernels:
        node = kf.functions.get("fused_kernel_triton")
        where = "is not decorated with @triton.jit" if node else "is missing"
        line = node.lineno if node else kf.sections.get("TRITON", (None,))[0]
        kf.problems.append(Problem(f"the Triton kernel fused_kernel_triton {where} (a @triton.jit function in "
                                   "the TRITON section)", line))
    if pytorch and wrapper and _params(pytorch) != _params(wrapper):
        kf.problems.append(Problem(f"fused_kernel_triton_wrapper({', '.join(_params(wrapper))}) must take the same "
                                   f"arguments as fused_kernel_pytorch({', '.join(_params(pytorch))})",
                                   wrapper.lineno))
    if perf and _params(perf)[:3] != ["pytorch_func", "triton_func", "inputs"]:
        kf.problems.append(Problem("test_performance must take (pytorch_func, triton_func, inputs, num_runs=50)",
                                   perf.lineno))
    if "get_inputs" not in kf.functions and kf.task is None:
        kf.problems.append(Problem("the file defines neither get_inputs() nor TASK: nothing says what to run it on"))
    elif "get_inputs" in kf.functions and main_lines and kf.functions["get_inputs"].lineno > main_lines[0]:
        kf.problems.append(Problem("get_inputs() must be defined before the main block",
                                   kf.functions["get_inputs"].lineno))
    return kf


def load_module(path: str | Path, name: str | None = None) -> ModuleType:
    """Import the Python file at ``path`` as module ``name`` (default: the file's stem), registered in
    ``sys.modules`` before its code runs (as an import would, so dataclasses and pickling inside it work)."""
    name = name or Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def next_free_path(folder: Path) -> Path:
    """``NNN_fused_kernels.py`` with the next number after the highest one in ``folder`` (at least 3 digits)."""
    numbers = [n for p in folder.glob("*_fused_kernels.py") if (n := attempt_number(p)) is not None]
    return folder / f"{max(numbers, default=0) + 1:03d}_fused_kernels.py"


def attempt_number(path: str | Path) -> int | None:
    """NNN of ``NNN_fused_kernels.py``, or None for another name."""
    m = FILE_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


HEADER = '''import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
'''

TEST_PERFORMANCE = '''def test_performance(pytorch_func, triton_func, inputs, num_runs=50):
    """Total seconds for `num_runs` calls of each function, timed with CUDA events after a warm-up.

    A quick standalone figure; `fusionforge bench` is the trusted measurement. (None, None) on the CPU.
    """
    if not torch.cuda.is_available():
        return None, None
    totals = []
    for func in (pytorch_func, triton_func):
        for _ in range(3):
            func(*inputs)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(num_runs):
            func(*inputs)
        end.record()
        torch.cuda.synchronize()
        totals.append(start.elapsed_time(end) / 1000.0)
    return totals[0], totals[1]
'''

MAIN = '''if __name__ == '__main__':
    import os
    import sys

    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit(f"No CUDA GPU here: fusionforge check {{sys.argv[0]}} checks it on the CPU (Triton's interpreter)")
    ATTEMPT = {attempt}
    NUM_RUNS = 50
    print(f"=== ATTEMPT {{ATTEMPT}}: {{__doc__.split(':', 1)[1].strip()}} ===")
    inputs = get_inputs()
    outputs, errors = {{}}, {{}}
    for name, func in (("PyTorch", fused_kernel_pytorch), ("Triton", fused_kernel_triton_wrapper)):
        try:
            outputs[name] = func(*inputs)
        except Exception as exc:  # report every failure, then stop
            errors[name] = f"{{type(exc).__name__}}: {{exc}}"
    if not errors and isinstance(outputs["PyTorch"], tuple):  # fp8 values and their scales
        got = outputs["Triton"] if isinstance(outputs["Triton"], tuple) else (outputs["Triton"],)
        # a value may round to its e4m3 neighbour (1/8 of it at most); a 16-bit chain's rounding moves the scales
        tols = [0.125 if ref.dtype == torch.float8_e4m3fn else 5e-2 for ref in outputs["PyTorch"]]
        if len(got) != len(tols) or not all(out.shape == ref.shape and torch.allclose(out.float(), ref.float(),
                                                                                      rtol=tol, atol=tol)
                                            for out, ref, tol in zip(got, outputs["PyTorch"], tols)):
            errors["Triton"] = "outputs do not match PyTorch"
    elif not errors and not outputs["PyTorch"].is_floating_point():
        # indices: against PyTorch on float64 inputs, as a 16-bit near-tie may be picked either way
        ref = fused_kernel_pytorch(*[v.double() if torch.is_tensor(v) and v.is_floating_point() else v
                                     for v in inputs])
        out = outputs["Triton"]
        if out.shape != ref.shape or (out != ref).float().mean() > 0.01:
            errors["Triton"] = "indices differ from PyTorch's (in float64) in over 1% of rows"
    elif not errors:
        ref, out = outputs["PyTorch"].float(), outputs["Triton"].float()
        tol = {{torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}}.get(outputs["PyTorch"].dtype, 1e-2)
        if out.shape != ref.shape or not torch.allclose(out, ref, rtol=tol, atol=tol):
            errors["Triton"] = "output does not match PyTorch"
    print("=" * 60)
    print(f"FINAL TEST REPORT - ATTEMPT {{ATTEMPT}}")
    print("=" * 60)
    for name in ("PyTorch", "Triton"):
        status = "\\u2713 SUCCESS" if name not in errors else f"\\u274c FAILED ({{errors[name]}})"
        print(f"{{name + ' Implementation:':<24}}{{status}}")
    if not errors:
        pytorch_time, triton_time = test_performance(fused_kernel_pytorch, fused_kernel_triton_wrapper, inputs,
                                                     NUM_RUNS)
        if pytorch_time is None:
            print("\\nPyTorch Time: not timed (timing needs a CUDA GPU)")
            print("Triton Time:  not timed (timing needs a CUDA GPU)")
        else:
            print(f"\\nPyTorch Time: {{pytorch_time:.4f}}s ({{pytorch_time / NUM_RUNS * 1000:.2f}}ms per run)")
            print(f"Triton Time:  {{triton_time:.4f}}s ({{triton_time / NUM_RUNS * 1000:.2f}}ms per run)")
            ratio = pytorch_time / triton_time
            verdict = f"{{ratio:.2f}}x FASTER" if ratio > 1 else f"{{1 / ratio:.2f}}x SLOWER"
            print(f"\\n\\U0001f3c6 RESULT: Triton is {{verdict}} than PyTorch")
        print("\\n\\u2705 SUCCESS: Both implementations completed successfully!")
    sys.exit(1 if errors else 0)
'''


def render(description: str, python_section: str, triton_section: str, get_inputs: str, attempt: int = 1) -> str:
    """A complete kernel file in the seed format from its three hand- or machine-written parts."""
    parts = [f'"""{DOCSTRING_PREFIX} {description}"""', HEADER,
             "# <PYTHON>", python_section.strip("\n"), "# </PYTHON>", "",
             "# <TRITON>", triton_section.strip("\n"), "# </TRITON>", "",
             "# <TEST>", get_inputs.strip("\n"), "", "", TEST_PERFORMANCE.strip("\n"), "# </TEST>", "",
             MAIN.format(attempt=attempt)]
    return "\n".join(parts)
