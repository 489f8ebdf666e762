"""The tasks handed out to an outside agent: a person or program that writes the kernel file itself.

``generate_fusion_task.py`` records each task it prints in a state folder (``.fusionforge/`` in the
working directory), so that ``fusionforge attempt FILE`` checks FILE against the task that was really
handed out, not against whatever the file's own TASK claims, and knows which attempt this is: the
attempts are logged under ``runs/agent/<task id>/`` like the loop's. ``fusionforge task --current``
shows the task handed out last, with the command that prints it again.
"""

from __future__ import annotations

import json
from pathlib import Path

from fusionforge.atomic import write_json
from fusionforge.pipeline import TaskLog
from fusionforge.tasks import FusionTask

STATE = ".fusionforge"


class Handout:
    """The tasks handed out in one working directory: ``tasks/<id>.json`` and ``current.json``."""

    def __init__(self, folder: str | Path = STATE) -> None:
        self.folder = Path(folder)

    def record(self, task: FusionTask, command: str | None = None) -> None:
        """Hand ``task`` out: it becomes the current task; ``command`` prints it again."""
        (self.folder / "tasks").mkdir(parents=True, exist_ok=True)
        write_json(self.folder / "tasks" / f"{task.id}.json", task.to_dict())
        write_json(self.folder / "current.json", {"task_id": task.id, "command": command})

    def _current(self) -> dict:
        path = self.folder / "current.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def current_id(self) -> str | None:
        return self._current().get("task_id")

    def current_command(self) -> str | None:
        """The command that prints the current task again (None for a task handed out with --task)."""
        return self._current().get("command")

    def task(self, task_id: str | None = None) -> FusionTask | None:
        """A handed-out task by id, or the one handed out last; None when there is none."""
        task_id = task_id or self.current_id()
        path = self.folder / "tasks" / f"{task_id}.json"
        return FusionTask.from_json(path.read_text()) if task_id and path.exists() else None

    @staticmethod
    def log(task: FusionTask, runs_root: Path) -> TaskLog:
        return TaskLog(runs_root / "agent" / task.id)


def skeleton(task: FusionTask) -> str:
    """The kernel file an outside agent fills in: the built-in generator's file for ``task`` with its TRITON
    section replaced by the kernel's and the wrapper's signatures to write.

    Everything else is ready and checked as it stands: the docstring line, TASK (a Python literal), the
    PyTorch function, ``get_inputs`` (drawn like the task's inputs) and the main block.
    UnsupportedTask when the generator has no plan for the chain.
    """
    from fusionforge.implement import generate

    lines = generate(task).splitlines()
    first, last = lines.index("# <TRITON>"), lines.index("# </TRITON>")
    return "\n".join(lines[:first + 1] + _triton_stub(task).splitlines() + lines[last:]) + "\n"


def _triton_stub(task: FusionTask) -> str:
    from fusionforge.tasks import SCALAR_DTYPE

    chain = "\n".join(f"        {line}" for line in task.pytorch_body())
    params = [spec.name if spec.dtype == SCALAR_DTYPE else f"{spec.name}_ptr" for spec in task.inputs]
    output = task.output_text()
    return f'''@triton.jit
def fused_kernel_triton({", ".join(params)}, out_ptr, BLOCK_SIZE: tl.constexpr):
    """TODO: fuse the chain into this kernel (add the sizes, strides and block sizes it needs; more kernels
    may follow it). fused_kernel_pytorch computes, with h the running value:

{chain}

    Load, then compute in float32 (.to(tl.float32)); store once in the output's dtype. Mask every load and
    store: the test shapes are odd sizes.
    """


def fused_kernel_triton_wrapper({", ".join(task.arg_names)}):
    """TODO: allocate the output ({output}), launch the kernels, return it. Outside the launches
    only allocation, views, reshapes and contiguous copies: no torch math."""
    raise NotImplementedError("fused_kernel_triton_wrapper is not written yet")'''
