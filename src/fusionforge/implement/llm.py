"""The LLM implementer: a chat model behind an OpenAI-compatible endpoint writes the kernel file.

The conversation is the system prompt, the task, then for every earlier attempt the file it produced and
the checker's failure analysis, so each new attempt sees what went wrong before. The prompt templates are
``prompts/system.md``, ``prompts/task.md`` and ``prompts/retry.md`` (``string.Template``, ``$name`` fields).
"""

from __future__ import annotations

import ast
import functools
import os
import re
import time
from importlib import resources
from string import Template

from fusionforge import kernelbench, kernelfile
from fusionforge.codegen import python_section
from fusionforge.implement.base import Implementation, ImplementerError, PastAttempt
from fusionforge.tasks import SCALAR_DTYPE, FusionTask, step_label
from fusionforge.verify.verdict import Failure

WRAPPER = "fused_kernel_triton_wrapper"
RETRY_DELAY_CAP = 60.0  # seconds, for both the backoff and a server's Retry-After
PROBE_TIMEOUT = 30.0
ERROR_TEXT_LIMIT = 300
FENCED_BLOCK = re.compile(r"^[ \t]*```[^\n`]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
TRITON_PLACEHOLDER = ("# Your @triton.jit kernels (the first one named fused_kernel_triton), then:\n"
                      "def fused_kernel_triton_wrapper({args}):\n    ...\n")
GET_INPUTS_PLACEHOLDER = ("def get_inputs():\n"
                          '    """One call\'s arguments: bench shape on a GPU, first test shape on the CPU."""\n'
                          "    ...\n")


@functools.cache
def template(name: str) -> Template:
    """The prompt template ``prompts/<name>.md``."""
    return Template((resources.files("fusionforge.implement") / "prompts" / f"{name}.md").read_text(encoding="utf-8"))


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _dims_text(family: list[dict[str, int]]) -> str:
    return "; ".join(" ".join(f"{k}={v}" for k, v in dims.items()) for dims in family)


def skeleton(task: FusionTask, attempt: int) -> str:
    """The kernel file with its fixed parts written and the TRITON section and get_inputs() left to fill."""
    python = python_section(task)
    triton = TRITON_PLACEHOLDER.format(args=", ".join(task.arg_names))
    return kernelfile.render(task.description, python, triton, GET_INPUTS_PLACEHOLDER, attempt)


def task_prompt(task: FusionTask, attempt: int) -> str:
    """The first user turn: the task in words, its PyTorch chain, inputs, shapes and the file to complete."""
    if task.family == kernelbench.KIND:
        return kernelbench_prompt(task, attempt)
    operations = []
    for k, (step, shape) in enumerate(zip(task.steps, task.step_shapes()), start=1):
        operands = f" ({', '.join(step.inputs)})" if step.inputs else ""
        operations.append(f"{k}. {step_label(step)}{operands} -> {_shape_text(shape)}")
    inputs = []
    for spec in task.inputs:
        kind = "Python float" if spec.dtype == SCALAR_DTYPE else f"{_shape_text(spec.shape)} {spec.dtype}"
        drawn = ", ".join(f"{key}={value}" for key, value in spec.init.items())
        inputs.append(f"- {spec.name}: {kind}, {spec.role}, drawn {drawn}")
    return template("task").substitute(
        task_id=task.id, seed=task.seed, difficulty=task.difficulty, dtype=task.dtype, attempt=attempt,
        description=task.description, operations="\n".join(operations), pytorch_source=task.pytorch_source(),
        inputs="\n".join(inputs), output=task.output_text(),
        test_shapes=_dims_text(task.shapes["test"]), bench_shapes=_dims_text(task.shapes["bench"]),
        skeleton=skeleton(task, attempt))


def kernelbench_prompt(task: kernelbench.KernelBenchTask, attempt: int) -> str:
    """The first user turn for a KernelBench problem: its module, the arguments, the sizes, the file to complete."""
    test, bench = task.shapes["test"][0], task.shapes["bench"][0]
    arguments = [f"- {name}: {_shape_text(a) if isinstance(a, tuple) else a} at the test sizes, "
                 f"{_shape_text(b) if isinstance(b, tuple) else b} at the bench sizes"
                 for name, a, b in zip(task.arg_names, task.argument_shapes(test), task.argument_shapes(bench))]
    triton = TRITON_PLACEHOLDER.format(args=", ".join(task.arg_names))
    return template("kernelbench").substitute(
        name=task.name, task_id=task.id, dtype=task.dtype, attempt=attempt, problem=task.source,
        arguments="\n".join(arguments), test_shapes=_dims_text(task.shapes["test"]),
        bench_shapes=_dims_text(task.shapes["bench"]), skeleton=kernelbench.skeleton(task, triton, attempt))


def conversation(task: FusionTask, attempt: int, history: list[PastAttempt]) -> list[dict]:
    """Chat messages asking for attempt ``attempt``, carrying every earlier attempt and its failure analysis."""
    numbers = [past.number for past in history] + [attempt]
    messages = [{"role": "system", "content": template("system").substitute()},
                {"role": "user", "content": task_prompt(task, numbers[0])}]
    for past, next_number in zip(history, numbers[1:]):
        answer = (f"```python\n{past.source.rstrip()}\n```" if past.source is not None
                  else "(This reply held no usable kernel file.)")
        messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": template("retry").substitute(
            failed_attempt=past.number, report=past.report.strip(), attempt=next_number)})
    return messages


def _defines_wrapper(text: str) -> bool:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    return any(isinstance(node, ast.FunctionDef) and node.name == WRAPPER for node in tree.body)


def extract_source(reply: str) -> str | None:
    """The kernel file in a reply: the last fenced block naming the wrapper, else the bare reply if it is one."""
    blocks = [block for block in FENCED_BLOCK.findall(reply) if WRAPPER in block]
    if blocks:
        return blocks[-1]
    if "```" not in reply and _defines_wrapper(reply):
        return reply.strip() + "\n"
    return None


def reply_failure(reply: str, finish_reason: str | None, max_tokens: int) -> Failure:
    """The format failure for a reply that holds no kernel file."""
    if finish_reason == "length":
        message = f"the reply was cut off at the token limit ({max_tokens}) before the kernel file was complete"
        root_cause = "The reply ran out of tokens: too much text around the file, or a file longer than the limit."
        planned_fix = "Reply with the file alone in one code block, kept compact; no explanation around it."
    elif not reply.strip():
        message = "the reply was empty"
        root_cause = "The model returned no text."
        planned_fix = "Reply with the complete kernel file in one ```python code block."
    else:
        message = "the reply has no code block with a kernel file"
        root_cause = f"No fenced code block in the reply defines {WRAPPER}, so there is no file to check."
        planned_fix = "Reply with the complete kernel file, every section included, in one ```python code block."
    return Failure(category="format", implementation="Both", message=message, root_cause=root_cause,
                   planned_fix=planned_fix)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:ERROR_TEXT_LIMIT]


class RequestRefused(Exception):
    """The endpoint refused one request (400, 413, 422) while it accepts the key and the model."""


class LLMImplementer:
    """Asks a chat model (OpenAI API or any compatible server: vLLM, Ollama, ...) for each attempt's file."""

    name = "llm"

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 0.2, max_tokens: int = 16384, timeout: float = 600.0, max_retries: int = 4,
                 backoff: float = 2.0):
        try:
            import openai
        except ImportError:
            raise ImplementerError("the LLM implementer needs the openai package: pip install 'fusionforge[llm]'") \
                from None
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ImplementerError(f"set {api_key_env} to the endpoint's API key (local servers such as vLLM or "
                                   f"Ollama accept any value, e.g. {api_key_env}=EMPTY)")
        self._openai = openai
        self.model = model
        self.max_tokens = max_tokens
        # sampling options as sent; adapted once when a model refuses one (see _adapt)
        self.options: dict = {"temperature": temperature, "max_tokens": max_tokens}
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self.base_url = str(self.client.base_url)

    def probe(self) -> None:
        """Raise ImplementerError unless the endpoint answers and accepts the key."""
        try:
            self.client.with_options(timeout=min(self.timeout, PROBE_TIMEOUT)).models.list()
        except (self._openai.APIConnectionError, self._openai.AuthenticationError,
                self._openai.PermissionDeniedError) as e:
            raise ImplementerError(self._describe(e)) from e
        except self._openai.APIStatusError:
            pass  # it answered; some compatible servers have no /models route

    def implement(self, task: FusionTask, attempt: int, history: list[PastAttempt]) -> Implementation:
        start = time.perf_counter()
        try:
            response, requests = self._complete(conversation(task, attempt, history))
        except RequestRefused as e:  # this request only (e.g. the history outgrew the context): a failed attempt
            return Implementation(source=None, model=self.model, usage={"requests": 1, "seconds": round(
                time.perf_counter() - start, 3)}, failure=Failure(
                category="format", implementation="Both", message=f"no reply: {e}",
                root_cause="The endpoint refused this request, for example because the conversation with every "
                           "earlier attempt no longer fits the model's context.",
                planned_fix="Nothing to fix in a kernel file: use a model with a longer context or fewer attempts."))
        choice = response.choices[0] if response.choices else None
        reply = (choice.message.content if choice else None) or ""
        finish_reason = choice.finish_reason if choice else None
        tokens = response.usage
        usage = {"requests": requests,
                 "prompt_tokens": tokens.prompt_tokens if tokens else None,
                 "completion_tokens": tokens.completion_tokens if tokens else None,
                 "total_tokens": tokens.total_tokens if tokens else None,
                 # the price of the request, where the endpoint reports one (OpenRouter and others do)
                 "cost": (getattr(tokens, "model_extra", None) or {}).get("cost") if tokens else None,
                 "seconds": round(time.perf_counter() - start, 3),
                 "finish_reason": finish_reason}
        model = response.model or self.model
        source = extract_source(reply)
        if source is None:
            return Implementation(source=None, failure=reply_failure(reply, finish_reason, self.max_tokens),
                                  usage=usage, model=model)
        return Implementation(source=source, usage=usage, model=model)

    def _complete(self, messages: list[dict]):
        """The chat completion and the number of requests it took; transient errors are retried with backoff."""
        transient = (self._openai.RateLimitError, self._openai.APIConnectionError, self._openai.InternalServerError)
        requests = 0
        for retry in range(self.max_retries + 1):
            try:
                while True:  # ends: each adaptation removes an option
                    requests += 1
                    try:
                        return self.client.chat.completions.create(model=self.model, messages=messages,
                                                                   **self.options), requests
                    except self._openai.BadRequestError as e:
                        if not self._adapt(self._describe(e)):
                            raise
            except transient as e:
                if retry == self.max_retries:
                    raise ImplementerError(f"{self._describe(e)} (gave up after {requests} requests)") from e
                time.sleep(self._delay(e, retry))
            except self._openai.APIStatusError as e:
                if e.status_code in (400, 413, 422):
                    raise RequestRefused(self._describe(e)) from e
                raise ImplementerError(self._describe(e)) from e

    def _adapt(self, refusal: str) -> bool:
        """Change the sampling options a model refused, as some hosted models do (OpenAI's reasoning models
        take ``max_completion_tokens``, not ``max_tokens``, and only their default temperature); True when
        something changed, so the request is worth sending again."""
        if "max_completion_tokens" in refusal and "max_tokens" in self.options:
            self.options["max_completion_tokens"] = self.options.pop("max_tokens")
            return True
        if "temperature" in refusal and "unsupported" in refusal.lower() and "temperature" in self.options:
            del self.options["temperature"]
            return True
        return False

    def _delay(self, error: Exception, retry: int) -> float:
        """Seconds before the next request: the server's Retry-After when it gives one, else exponential backoff."""
        response = getattr(error, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        try:
            delay = float(retry_after)
        except (TypeError, ValueError):  # absent, or an HTTP date
            delay = self.backoff * 2 ** retry
        return min(max(delay, 0.0), RETRY_DELAY_CAP)

    def _describe(self, error: Exception) -> str:
        """One line saying what went wrong with the endpoint."""
        openai = self._openai
        if isinstance(error, openai.APITimeoutError):
            return f"the endpoint at {self.base_url} did not answer within {self.timeout:g} s"
        if isinstance(error, openai.APIConnectionError):
            return f"cannot reach the endpoint at {self.base_url}: {_one_line(error.__cause__ or error.message)}"
        status = error.status_code
        body = error.body
        detail = _one_line(body.get("message", body) if isinstance(body, dict) else body or error.message)
        if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return f"the endpoint refused the key ({status}): {detail}"
        if isinstance(error, openai.NotFoundError):
            return (f"the endpoint at {self.base_url} has no model {self.model!r} or no chat completions route "
                    f"({status}): {detail}")
        return f"the endpoint answered {status}: {detail}"
