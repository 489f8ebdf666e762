"""Counting, identifying and (for the ghost replay) skipping Triton launches in a child process."""

class LaunchMonitor:
    """Counts Triton launches (by kernel name and file) and can skip them (ghost replay)."""

    def __init__(self) -> None:
        self.launches: list[tuple[str, str]] = []
        self.compiled: dict[str, object] = {}  # kernel name -> the last compiled kernel it ran (GPU only)
        self.streams: dict[int, object] = {}  # raw handle -> CUDA stream Triton kernels were launched on (GPU only)
        self.inside = 0
        self.skip = False
        self.stream_handle = None  # () -> the raw handle of the stream Triton launches on now (GPU, once installed)

    def install(self) -> None:
        import torch
        import triton.runtime.interpreter as interpreter
        import triton.runtime.jit as jit

        on_gpu = torch.cuda.is_available()
        if on_gpu:  # the calls Triton's launcher makes to find its stream: cheap, unlike torch.cuda.current_stream()
            from triton.runtime import driver

            current_device, raw_stream = driver.active.get_current_device, driver.active.get_current_stream
            self.stream_handle = lambda: raw_stream(current_device())

        for cls in (jit.JITFunction, interpreter.InterpretedFunction):
            original = cls.run

            def run(fn_self, *args, _original=original, **kwargs):
                if kwargs.get("warmup"):
                    return _original(fn_self, *args, **kwargs)
                code = fn_self.fn.__code__
                self.launches.append((fn_self.fn.__name__, code.co_filename))
                if on_gpu:
                    handle = self.stream_handle()
                    if handle not in self.streams:
                        self.streams[handle] = torch.cuda.current_stream()
                if self.skip:
                    return None
                self.inside += 1
                try:
                    kernel = _original(fn_self, *args, **kwargs)
                finally:
                    self.inside -= 1
                if hasattr(kernel, "n_regs"):
                    self.compiled[fn_self.fn.__name__] = kernel
                return kernel

            cls.run = run


    def resources(self) -> dict[str, dict]:
        """Per kernel: registers, spills, shared memory and warps of its compiled form (GPU only)."""
        out = {}
        for name, kernel in self.compiled.items():
            meta = getattr(kernel, "metadata", None)
            out[name] = {"registers": getattr(kernel, "n_regs", None), "spills": getattr(kernel, "n_spills", None),
                         "shared_bytes": getattr(meta, "shared", None), "num_warps": getattr(meta, "num_warps", None),
                         "num_stages": getattr(meta, "num_stages", None)}
        return out
