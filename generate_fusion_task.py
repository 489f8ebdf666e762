"""Generate a fusion task: ``python generate_fusion_task.py [--seed S] [--difficulty D] [--json] ...``.

The users' workflow entry point; the same as ``fusionforge task``. Runs from a checkout without
installing (it puts ``src/`` on the path).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from fusionforge.cli import task_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(task_main())
