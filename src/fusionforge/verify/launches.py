"""Counting, identifying and (for the ghost replay) skipping Triton launches in a child process.

A launch enters Triton through the ``run`` of a kernel interface: an ``Autotuner`` or ``Heuristics``
wrapping a ``JITFunction`` (``InterpretedFunction`` under the CPU interpreter), or the JIT function
itself. The outermost ``run`` of a launch is what the wrapper asked for; what runs beneath it
(autotuning trials, their resets and restores, compilation) belongs to the launch. The monitor
records every JIT-level launch (kernel name and file), keeps a depth so that work inside a launch can
be told from the wrapper's own, and hands each outermost launch to an observer (the checker's
ledger) before and after it runs. It also knows when an autotuner is trying configs: those trial
launches, and whatever file code they run (a config's pre_hook, an allocator), happen only on the
first call with a new autotuning key.

Autotuned kernels and their configs. Any config of an autotuner may be the one a GPU picks, at any
shape, and each autotuner picks its own, so the checker runs a file once per combination of configs: the
monitor notes which configs each autotuner had and ran during a call (``tuners``; pruned once a launch,
so a pruning that changes from call to call shows the list that was tuned), and can make each autotuner
run the config ``forced`` names for it, as a cached choice would, without tuning. Configs that differ
only in how a GPU runs the same program (warps, stages, CTAs, registers) count once.
"""

import inspect
import time


def config_key(config) -> tuple:
    """What makes two configs compute differently: their meta-parameters and pre_hook (not warps or stages)."""
    return tuple(sorted(config.kwargs.items())), config.pre_hook


def distinct_configs(configs: list) -> list:
    """``configs`` without those that compute as an earlier one does (``config_key``)."""
    kept: dict = {}
    for config in configs:
        kept.setdefault(config_key(config), config)
    return list(kept.values())


def cannot_run(exc: BaseException) -> bool:
    """Whether ``exc`` says a config cannot run at all, one that tuning skips (its timing infinite): out of
    resources, a ptxas error, a failed ``tl.static_assert`` (under the interpreter an AssertionError from its
    static_assert, wrapped in an InterpreterError)."""
    from triton.compiler.errors import CompileTimeAssertionFailure
    from triton.runtime.errors import OutOfResources, PTXASError

    while exc is not None:
        if isinstance(exc, (OutOfResources, PTXASError, CompileTimeAssertionFailure)):
            return True
        if isinstance(exc, AssertionError):
            frame = exc.__traceback__
            while frame is not None and frame.tb_next is not None:
                frame = frame.tb_next
            if frame is not None and frame.tb_frame.f_code.co_name == "_new_static_assert":
                return True
        exc = exc.__cause__
    return False


def python_function(kernel):
    """The Python function under a kernel interface (through autotuners and heuristics)."""
    while not inspect.isfunction(kernel):
        kernel = kernel.fn
    return kernel


class LaunchMonitor:
    """Counts Triton launches (by kernel name and file) and can skip them (ghost replay)."""

    def __init__(self) -> None:
        self.launches: list[tuple[str, str]] = []
        self.compiled: dict[str, object] = {}  # kernel name -> the last compiled kernel it ran (GPU only)
        self.streams: dict[int, object] = {}  # raw handle -> CUDA stream Triton kernels were launched on (GPU only)
        self.depth = 0  # > 0 while a launch runs
        self.trials = 0  # > 0 while an autotuner tries its configs
        self.skip = False
        self.observer = None  # before_launch(kernel, args, kwargs) / after_launch(compiled): the checker's ledger
        self.stream_handle = None  # () -> the raw handle of the stream Triton launches on now (GPU, once installed)
        self.compile_seconds = 0.0  # in Triton's compiler (a compile, or a load from its cache; GPU only)
        self.autotune_seconds = 0.0  # in autotuners' trials (the compiles of their configs included)
        self.tuners: dict | None = None  # when a dict: autotuner -> (kernel name, its distinct configs, the one run)
        self.forced: dict | None = None  # when a dict: autotuner -> the config it runs, untuned

    @property
    def inside(self) -> bool:
        return self.depth > 0

    @property
    def in_trial(self) -> bool:
        return self.trials > 0

    def install(self) -> None:
        import torch
        import triton.runtime.autotuner as autotuner
        import triton.runtime.interpreter as interpreter
        import triton.runtime.jit as jit

        on_gpu = torch.cuda.is_available()
        if on_gpu:  # the calls Triton's launcher makes to find its stream: cheap, unlike torch.cuda.current_stream()
            from triton.runtime import driver

            current_device, raw_stream = driver.active.get_current_device, driver.active.get_current_stream
            self.stream_handle = lambda: raw_stream(current_device())

        def record(kernel) -> None:
            code = python_function(kernel).__code__
            self.launches.append((code.co_name, code.co_filename))
            if on_gpu:
                handle = self.stream_handle()
                if handle not in self.streams:
                    self.streams[handle] = torch.cuda.current_stream()

        autotuned = autotuner.Autotuner.run

        def run_config(tuner, *args, **kwargs):
            """Autotuner.run, noting the configs it had and chose (``tuners``), or running the config ``forced``
            names for it as a cached choice."""
            if (self.tuners is None and self.forced is None) or len(tuner.configs) < 2 or kwargs.get("warmup"):
                return autotuned(tuner, *args, **kwargs)
            tuner.nargs = dict(zip(tuner.arg_names, args))
            if self.forced is not None and tuner in self.forced:
                tuner.best_config = config = self.forced[tuner]
                try:
                    if config.pre_hook is not None:
                        config.pre_hook({**tuner.nargs, **kwargs, **config.all_kwargs()})
                    result = tuner.fn.run(*args, **kwargs, **config.all_kwargs())
                except Exception as exc:
                    if not cannot_run(exc):
                        raise
                    result = autotuned(tuner, *args, **kwargs)  # tuning skips such a config: the tuned one runs
                tuner.nargs = None
                return result
            pruned = tuner.prune_configs(kwargs)
            tuner.prune_configs = lambda _: pruned  # one pruning a launch: the configs noted are those tuned
            try:
                result = autotuned(tuner, *args, **kwargs)
            finally:
                del tuner.prune_configs
            if self.tuners is not None:
                configs = distinct_configs(pruned)
                chosen = next((c for c in configs if config_key(c) == config_key(tuner.best_config)), configs[0])
                self.tuners[tuner] = (python_function(tuner).__name__, configs, chosen)
            return result

        autotuner.Autotuner.run = run_config
        jit_level = (jit.JITFunction, interpreter.InterpretedFunction)
        for cls in (*jit_level, autotuner.Autotuner, autotuner.Heuristics):
            original = cls.run

            def run(kernel, *args, _original=original, _jit=cls in jit_level, **kwargs):
                if kwargs.get("warmup"):
                    return _original(kernel, *args, **kwargs)
                outer = self.depth == 0
                if _jit or (outer and self.skip):
                    record(kernel)
                if outer and self.skip:
                    return None
                observer = self.observer if outer else None
                self.depth += 1
                try:
                    if observer is not None:
                        kwargs = observer.before_launch(kernel, args, kwargs)
                    compiled = _original(kernel, *args, **kwargs)
                    if observer is not None:
                        observer.after_launch(compiled)
                finally:
                    self.depth -= 1
                if hasattr(compiled, "n_regs"):
                    self.compiled[python_function(kernel).__name__] = compiled
                return compiled

            cls.run = run

        bench = autotuner.Autotuner._bench

        def trial(kernel, *args, **kwargs):
            self.trials += 1
            started = time.perf_counter()
            try:
                return bench(kernel, *args, **kwargs)
            finally:
                self.trials -= 1
                self.autotune_seconds += time.perf_counter() - started

        autotuner.Autotuner._bench = trial
        if hasattr(jit.JITFunction, "_do_compile"):
            do_compile = jit.JITFunction._do_compile

            def timed_compile(kernel, *args, **kwargs):
                started = time.perf_counter()
                try:
                    return do_compile(kernel, *args, **kwargs)
                finally:
                    self.compile_seconds += time.perf_counter() - started

            jit.JITFunction._do_compile = timed_compile

    def resources(self) -> dict[str, dict]:
        """Per kernel: registers, spills, shared memory and warps of its compiled form (GPU only)."""
        out = {}
        for name, kernel in self.compiled.items():
            meta = getattr(kernel, "metadata", None)
            out[name] = {"registers": getattr(kernel, "n_regs", None), "spills": getattr(kernel, "n_spills", None),
                         "shared_bytes": getattr(meta, "shared", None), "num_warps": getattr(meta, "num_warps", None),
                         "num_stages": getattr(meta, "num_stages", None)}
        return out
