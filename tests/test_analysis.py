"""Failure analysis on error messages recorded from real runs."""

from fusionforge.verify import analysis

# Recorded on the H100 (Triton 3.6): the compiler quotes the kernel with a caret under the fault.
GPU_UNDEFINED = ("at 9:10:\ndef fused_kernel_triton(x_ptr, bias_ptr, out_ptr, n_elements, n_cols, "
                 "BLOCK_SIZE: tl.constexpr):\n    pid = tl.program_id(0)\n    out = tl.gelu_fast(h)\n          ^\n"
                 "AttributeError(\"module 'triton.language' has no attribute 'gelu_fast'\")")
GPU_ARANGE = ("at 4:33:\ndef fused_kernel_triton(x_ptr, BLOCK_SIZE: tl.constexpr):\n"
              "    offsets = pid * BLOCK_SIZE + tl.arange(0, 100)\n                                 ^\n"
              "arange's range must be a power of 2")
# Recorded on the CPU: the interpreter wraps the same mistakes.
CPU_ARANGE = "ValueError(\"arange's range must be a power of 2\")"


def _compile(message: str, type_name: str = "CompilationError"):
    error = {"type": type_name, "message": message, "causes": []}
    return analysis.error_failure(error, "Triton", 57, "test[0]", compile_error=True)


def test_gpu_compile_error_is_analysed_from_its_core_not_the_quoted_source():
    failure = _compile(GPU_UNDEFINED)
    assert "does not provide (gelu_fast)" in failure.root_cause
    assert "at `out = tl.gelu_fast(h)`" in failure.message and "def fused_kernel_triton" not in failure.message
    assert failure.category == "compile" and failure.stage == "compilation" and failure.line == 57


def test_power_of_two_on_gpu_and_cpu():
    for failure in (_compile(GPU_ARANGE), _compile(CPU_ARANGE, "InterpreterError")):
        assert "not a power of two" in failure.root_cause and "next_power_of_2" in failure.planned_fix


def test_runtime_patterns():
    illegal = analysis.error_failure({"type": "AcceleratorError", "message": "CUDA error: an illegal memory access "
                                      "was encountered", "causes": []}, "Triton", 49, "bench[0]", False)
    assert illegal.root_cause.startswith("Illegal memory access") and "Mask every" in illegal.planned_fix
    view = analysis.error_failure({"type": "RuntimeError", "message": "shape '[-1, 8]' is invalid for input of "
                                   "size 5983", "causes": []}, "Triton", 63, "test[0]", False)
    assert view.root_cause.startswith("Dimension mismatch")
    pytorch = analysis.error_failure({"type": "RuntimeError", "message": "boom", "causes": []}, "PyTorch", 42,
                                     "test[0]", False)
    assert pytorch.implementation == "PyTorch" and "fused_kernel_pytorch" in pytorch.planned_fix



def _plain_python(x):
    return x


def _kernel_calling_plain_python(x_ptr):
    _plain_python(x_ptr)


def test_a_python_function_called_from_a_kernel_is_a_compile_error():
    """A GPU refuses it while reading the kernel's source (a RuntimeError from Triton's dependency finder)."""
    from triton.runtime.jit import JITFunction

    from fusionforge.verify.checker import _reading_kernel_source
    from fusionforge.verify.runner import _error

    try:
        _ = JITFunction(_kernel_calling_plain_python).cache_key
    except RuntimeError as exc:
        refused = _error(exc, "triton")
    assert "Unsupported function referenced" in refused["message"] and _reading_kernel_source(refused)
    launch = {"type": "RuntimeError", "message": "Triton Error [CUDA]: invalid argument", "causes": [],
              "frames": [{"file": "/x/triton/backends/nvidia/driver.py", "line": 713, "function": "__call__"}]}
    assert not _reading_kernel_source(launch)
