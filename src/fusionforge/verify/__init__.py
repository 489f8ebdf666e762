"""Verification: run a kernel file in an isolated child process and judge its Triton implementation."""

from fusionforge.verify.checker import check_file
from fusionforge.verify.verdict import Failure, Verdict

__all__ = ["Failure", "Verdict", "check_file"]
