"""fusionforge: generate fusion tasks, implement them in PyTorch and Triton, verify, benchmark, keep the winners."""

__version__ = "0.1.0"
