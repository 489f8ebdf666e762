"""The whole kernel file: the PYTHON section (the task as a compact literal, the PyTorch function), the TRITON
section assembled from a plan's parts and the jit helpers its op forms call, and a plain-torch get_inputs."""

from __future__ import annotations

from fusionforge import ops as catalog
from fusionforge.codegen.source import fit
from fusionforge.codegen.wrapper import Section
from fusionforge.kernelfile import render
from fusionforge.tasks import SCALAR_DTYPE, FusionTask, InputSpec

WIDTH = 120


def task_literal(task: FusionTask, item_per_line: tuple[str, ...] = ()) -> str:
    """``TASK = {...}``: the task (without its cost, which the task computes) as a Python literal, one key a line,
    long values broken between their items; the lists named in ``item_per_line`` one item a line."""
    data = {k: v for k, v in task.to_dict().items() if k != "cost"}
    lines = ["TASK = {"]
    for key, value in data.items():
        if key in item_per_line:
            lines += [f"    {key!r}: [", *(f"        {item!r}," for item in value), "    ],"]
        else:
            lines += _fill(f"    {key!r}: ", value, ",")
    return "\n".join([*lines, "}"])


def _fill(opening: str, value, closing: str) -> list[str]:
    """``opening`` + repr(value) + ``closing`` on one line if it fits, else a list or dict broken between its
    items (an item too long for a line filled the same way), continuation lines aligned inside the bracket."""
    text = opening + repr(value) + closing
    if len(text) <= WIDTH or not isinstance(value, (list, dict)) or not value:
        return [text]
    pairs = [(f"{k!r}: ", v) for k, v in value.items()] if isinstance(value, dict) else [("", v) for v in value]
    left, right = ("{", "}") if isinstance(value, dict) else ("[", "]")
    indent = " " * (len(opening) + 1)
    lines, line = [], opening + left
    for k, (prefix, item) in enumerate(pairs):
        end = right + closing if k == len(pairs) - 1 else ","
        piece = prefix + repr(item) + end
        fresh = line in (opening + left, indent)
        if len(line) + (0 if fresh else 1) + len(piece) <= WIDTH:
            line += ("" if fresh else " ") + piece
            continue
        if not fresh:
            lines.append(line)
            line = indent
        filled = _fill(line + prefix, item, end)
        lines += filled[:-1]
        line = filled[-1]
    return [*lines, line]


def python_section(task: FusionTask) -> str:
    """The PYTHON section every implementer keeps as is: the TASK literal and the PyTorch function."""
    return task_literal(task) + "\n\n\n" + task.pytorch_source()


def triton_section(task: FusionTask, section: Section) -> str:
    """Jit helpers of the op forms, each kernel after its tuning code, host helpers, the wrapper; lines broken at
    120 columns."""
    helpers = dict.fromkeys(name for step in task.steps
                            for name in catalog.helpers_of(catalog.get(step.op), task.dtype))
    parts = [catalog.TRITON_HELPERS[name].rstrip() for name in helpers]
    parts += [kernel.text() for kernel in section.kernels]
    parts += section.host
    return fit("\n\n\n".join([*parts, section.wrapper.text()])) + "\n"


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
            names = init["fan_in"] if isinstance(init["fan_in"], list) else [init["fan_in"]]
            fan_in = " * ".join(f"{dims_name}[{name!r}]" for name in names)
            value += f" * ({init['std']} / {f'({fan_in})' if len(names) > 1 else fan_in} ** 0.5)"
        elif init["std"] != 1.0:
            value += f" * {init['std']}"
        if init["mean"]:
            value += f" + {init['mean']}"
    elif init["dist"] == "uniform":
        value = f"torch.rand({shape}, device=DEVICE) * {init['high'] - init['low']} + {init['low']}"
    elif init["dist"] == "randint":  # as tasks.draw: the first index the last class, the last index class 0
        high = f"{dims_name}[{init['high']!r}]"
        return "\n".join([f"    {spec.name} = torch.randint(0, {high}, {shape}, device=DEVICE)",
                          f"    {spec.name}.view(-1)[0], {spec.name}.view(-1)[-1] = {high} - 1, 0"])
    elif init["dist"] == "softmax":
        value = f"torch.softmax(torch.randn({shape}, device=DEVICE).clamp(-4.0, 4.0) * {init['std']}, dim=-1)"
    elif init["dist"] == "rotary":  # RoPE's table [S, D]: angle s / base^(2i / D), each half of D repeated
        half = f"{sizes[1]} // 2"
        return "\n".join([
            f"    angles = torch.arange({sizes[0]}, device=DEVICE, dtype=torch.float64)[:, None] * {init['base']} ** "
            f"(-torch.arange({half}, device=DEVICE, dtype=torch.float64) / ({half}))",
            f"    {spec.name} = torch.{init['part']}(torch.cat((angles, angles), dim=-1)).to(torch.{spec.dtype})"])
    else:
        magnitude = f"(torch.rand({shape}, device=DEVICE) * {init['high'] - init['low']} + {init['low']})"
        value = f"{magnitude} * (torch.randint(0, 2, {shape}, device=DEVICE) * 2 - 1)"
    if spec.dtype == SCALAR_DTYPE:
        return f"    {spec.name} = float({value})"
    return f"    {spec.name} = ({value}).to(torch.{spec.dtype})"


def get_inputs(task: FusionTask) -> str:
    """The file's own inputs for a standalone run (the checker draws from TASK instead): the bench shape on a GPU,
    the first test shape on a CPU, where Triton's interpreter runs the kernels."""
    bench, test = task.shapes["bench"][0], task.shapes["test"][0]
    return "\n".join([
        "def get_inputs():",
        '    """One call\'s arguments, drawn like the task\'s: the bench shape on a GPU, a test shape on the CPU."""',
        f"    dims = {bench!r} if DEVICE == \"cuda\" else {test!r}",
        *(_draw(spec, "dims") for spec in task.inputs),
        f"    return [{', '.join(task.arg_names)}]",
    ])


def file_text(task: FusionTask, section: Section, attempt: int) -> str:
    return render(task.description, python_section(task), triton_section(task, section), get_inputs(task), attempt)
