"""An outside agent's files, written beforehand, as an implementer: what `fusionforge eval --files DIR` judges.

    DIR/<task id>.py          the file for every sample of the task
    DIR/<task id>/<k>.py      the file for sample k (1, 2, ...)
    DIR/<problem name>.py     a KernelBench problem's file for every sample (its problem file's name)

The agent is not in the loop: each sample gets one attempt, and a second one has nothing new to try. A
missing file is that sample's failed attempt.
"""

from __future__ import annotations

from pathlib import Path

from fusionforge.implement.base import Implementation, PastAttempt
from fusionforge.tasks import FusionTask
from fusionforge.verify.verdict import Failure


class FolderImplementer:
    name = "agent"
    model = None

    def __init__(self, folder: Path, sample: int = 1) -> None:
        self.folder, self.sample = Path(folder), sample

    def for_sample(self, sample: int) -> FolderImplementer:
        """The same folder, answering for sample ``sample`` of each task."""
        return FolderImplementer(self.folder, sample)

    def path(self, task: FusionTask) -> Path:
        per_sample = self.folder / task.id
        if per_sample.is_dir():
            return per_sample / f"{self.sample}.py"
        by_id, by_name = self.folder / f"{task.id}.py", self.folder / f"{getattr(task, 'name', task.id)}.py"
        return by_name if not by_id.is_file() and by_name.is_file() else by_id

    def implement(self, task: FusionTask, attempt: int, history: list[PastAttempt]) -> Implementation:
        if history:
            return Implementation(source=None, exhausted=True)
        path = self.path(task)
        if not path.is_file():
            return Implementation(source=None, failure=Failure(
                "format", "Both", f"no kernel file: {path} does not exist",
                f"The folder has no file for task {task.id}, sample {self.sample}.",
                f"Write {path} (or {self.folder / task.id}.py for every sample)."))
        return Implementation(source=path.read_text(encoding="utf-8", errors="replace"))
