"""The LLM implementer against a scripted OpenAI-compatible server on loopback."""

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import run_args

from fusionforge.implement import generate
from fusionforge.implement.base import ImplementerError, PastAttempt
from fusionforge.implement.llm import LLMImplementer
from fusionforge.tasks import TaskGenerator
from fusionforge.verify import check_file
from fusionforge.verify.verdict import Failure, render_failure

KEY_ENV = "FUSIONFORGE_TEST_LLM_KEY"
TASK = TaskGenerator().generate(2, dtype="float32", ops="add:col,relu")
GOOD = generate(TASK)
BROKEN = GOOD.replace("    out = torch.empty_like(x)\n", "    out = torch.relu(x + bias0)\n    return out\n", 1)
USAGE = {"prompt_tokens": 1200, "completion_tokens": 800, "total_tokens": 2000}


def completion(content: str, finish_reason: str = "stop", usage: dict | None = USAGE) -> tuple[int, dict, dict]:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "served-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}]}
    if usage:
        body["usage"] = usage
    return 200, body, {}


def error(status: int, message: str, headers: dict | None = None) -> tuple[int, dict, dict]:
    return status, {"error": {"message": message, "type": "test", "code": None}}, headers or {}


class ScriptedServer:
    """Answers POST /chat/completions with the scripted replies in order; records every request body."""

    def __init__(self, replies: list[tuple[int, dict, dict]]):
        self.replies = list(replies)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append(json.loads(self.rfile.read(length)))
                self.answer(*server.replies.pop(0))

            def do_GET(self):
                self.answer(200, {"object": "list", "data": [{"id": "served-model", "object": "model",
                                                               "created": 0, "owned_by": "test"}]}, {})

            def answer(self, status: int, body: dict, headers: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-key")


def implementer(server: ScriptedServer, **options) -> LLMImplementer:
    return LLMImplementer("test-model", base_url=server.url, api_key_env=KEY_ENV, timeout=10.0, **options)


def test_failed_attempt_and_its_analysis_reach_the_next_request(tmp_path):
    reply_1 = f"Here is the file.\n\n```bash\npython 001_fused_kernels.py\n```\n\n```python\n{BROKEN}```\n"
    reply_2 = f"```python\n{GOOD}```\n\nThe wrapper now only allocates; the kernel computes add and relu."
    with ScriptedServer([completion(reply_1), completion(reply_2)]) as server:
        llm = implementer(server)
        first = llm.implement(TASK, 1, [])
        failure = Failure(category="cheat", implementation="Triton", message="the wrapper dispatched aten.relu",
                          root_cause="The wrapper computes the result with PyTorch ops.",
                          planned_fix="Compute add and relu inside fused_kernel_triton.", line=61)
        report = render_failure(failure, 1, fancy=False)
        second = llm.implement(TASK, 2, [PastAttempt(1, first.source, report, failure.to_dict())])

    assert first.source == BROKEN and first.failure is None
    assert second.source == GOOD and second.failure is None
    assert second.model == "served-model"
    request_1, request_2 = server.requests
    assert request_1["model"] == "test-model" and request_1["temperature"] == 0.2
    assert [m["role"] for m in request_1["messages"]] == ["system", "user"]
    task_turn = request_1["messages"][1]["content"]
    assert TASK.description in task_turn and "'signature': 'float32|r2|add(operand=col)>relu'" in task_turn
    assert [m["role"] for m in request_2["messages"]] == ["system", "user", "assistant", "user"]
    assert request_2["messages"][:2] == request_1["messages"]
    assert BROKEN in request_2["messages"][2]["content"]
    assert report in request_2["messages"][3]["content"]
    assert "ATTEMPT = 2" in request_2["messages"][3]["content"]

    path = tmp_path / "002_fused_kernels.py"
    path.write_text(second.source)
    verdict = check_file(path, task=TASK, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


def test_attempt_without_a_file_is_sent_as_a_note():
    with ScriptedServer([completion(f"```python\n{GOOD}```")]) as server:
        implementer(server).implement(TASK, 2, [PastAttempt(1, None, "FAILURE ANALYSIS - ATTEMPT 1 ...")])
    assistant = server.requests[0]["messages"][2]
    assert assistant["role"] == "assistant" and "no usable kernel file" in assistant["content"]


def test_bare_file_reply_is_accepted():
    with ScriptedServer([completion(GOOD)]) as server:
        assert implementer(server).implement(TASK, 1, []).source == GOOD


@pytest.mark.parametrize(("content", "finish_reason", "message"), [
    ("I cannot write this kernel.", "stop", "the reply has no code block with a kernel file"),
    ("", "stop", "the reply was empty"),
    (f"```python\n{GOOD[:2000]}", "length", "the reply was cut off at the token limit (16384)"),
])
def test_reply_without_a_file_is_a_format_failure(content, finish_reason, message):
    with ScriptedServer([completion(content, finish_reason)]) as server:
        result = implementer(server).implement(TASK, 1, [])
    assert result.source is None
    assert result.failure.category == "format" and result.failure.implementation == "Both"
    assert result.failure.message.startswith(message)
    assert result.usage["finish_reason"] == finish_reason


def test_usage_is_recorded():
    with ScriptedServer([completion(f"```python\n{GOOD}```")]) as server:
        usage = implementer(server).implement(TASK, 1, []).usage
    assert usage["requests"] == 1
    assert {k: usage[k] for k in USAGE} == USAGE
    assert usage["finish_reason"] == "stop" and usage["seconds"] >= 0


def test_rate_limit_is_retried_after_the_servers_delay():
    replies = [error(429, "slow down", {"Retry-After": "0.05"}), completion(f"```python\n{GOOD}```")]
    with ScriptedServer(replies) as server:
        start = time.perf_counter()
        result = implementer(server, backoff=30.0).implement(TASK, 1, [])
        elapsed = time.perf_counter() - start
    assert len(server.requests) == 2 and elapsed < 10  # Retry-After, not the 30 s backoff
    assert result.source == GOOD
    assert result.usage["requests"] == 2 and result.usage["total_tokens"] == USAGE["total_tokens"]


def test_server_errors_give_up_after_max_retries():
    with ScriptedServer([error(500, "overloaded")] * 5) as server:
        with pytest.raises(ImplementerError, match=r"500: overloaded \(gave up after 3 requests\)"):
            implementer(server, max_retries=2, backoff=0.001).implement(TASK, 1, [])
    assert len(server.requests) == 3


@pytest.mark.parametrize(("status", "message"), [(401, r"refused the key \(401\)"),
                                                 (404, r"no model 'test-model'.*\(404\)")])
def test_client_errors_are_not_retried(status, message):
    with ScriptedServer([error(status, "no")] * 3) as server:
        with pytest.raises(ImplementerError, match=message):
            implementer(server, backoff=0.001).implement(TASK, 1, [])
    assert len(server.requests) == 1


def test_a_refused_request_is_a_failed_attempt_not_the_end_of_the_run():
    """A 400 (say, the history no longer fits the context) fails this attempt; the run goes on."""
    with ScriptedServer([error(400, "maximum context length exceeded")] * 2) as server:
        result = implementer(server, backoff=0.001).implement(TASK, 3, [])
    assert result.source is None and result.failure.category == "format"
    assert "maximum context length exceeded" in result.failure.message and "context" in result.failure.root_cause
    assert len(server.requests) == 1


@pytest.mark.parametrize("refusals, sent", [
    (["Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."],
     {"max_completion_tokens": 16384, "temperature": 0.2}),
    (["Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
      "Unsupported value: 'temperature' does not support 0.2 with this model. Only the default (1) value is "
      "supported."], {"max_completion_tokens": 16384}),
])
def test_refused_sampling_options_are_adapted_once(refusals, sent):
    """Hosted reasoning models refuse max_tokens (and a non-default temperature): ask again without them,
    and keep the adapted options for the later attempts."""
    replies = [error(400, message) for message in refusals] + [completion(f"```python\n{GOOD}```")] * 2
    with ScriptedServer(replies) as server:
        llm = implementer(server)
        first, second = llm.implement(TASK, 1, []), llm.implement(TASK, 2, [])
    assert first.source == GOOD and second.source == GOOD
    assert first.usage["requests"] == len(refusals) + 1 and second.usage["requests"] == 1
    options = [{k: r[k] for k in ("max_tokens", "max_completion_tokens", "temperature") if k in r}
               for r in server.requests]
    assert options[0] == {"max_tokens": 16384, "temperature": 0.2}
    assert options[-1] == options[-2] == sent


def test_a_refusal_that_names_no_option_is_not_retried():
    with ScriptedServer([error(400, "messages: invalid role")] * 2) as server:
        result = implementer(server).implement(TASK, 1, [])
    assert result.source is None and "invalid role" in result.failure.message and len(server.requests) == 1


def test_missing_api_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ImplementerError, match=f"set {KEY_ENV} .*EMPTY"):
        LLMImplementer("test-model", api_key_env=KEY_ENV)


def test_probe():
    with ScriptedServer([]) as server:
        implementer(server).probe()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    llm = LLMImplementer("test-model", base_url=f"http://127.0.0.1:{closed_port}/v1", api_key_env=KEY_ENV)
    with pytest.raises(ImplementerError, match=f"cannot reach the endpoint at http://127.0.0.1:{closed_port}/v1"):
        llm.probe()


def test_missing_openai_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImplementerError, match=r"pip install 'fusionforge\[llm\]'"):
        LLMImplementer("test-model", api_key_env=KEY_ENV)


def llm_run_args(tmp_path, server_url: str) -> list[str]:
    return run_args(tmp_path, "--implementer", "llm", "--model", "test-model", "--base-url", server_url,
                    "--api-key-env", KEY_ENV, "--ops", "add:col,relu", "--dtype", "float32", "--seed", "2")


def test_run_with_the_llm_fails_then_fixes_and_keeps_the_kernel(tmp_path, capsys):
    """The whole loop: a cheating file (caught by the checker), then a fixed one, which lands in data/."""
    from fusionforge import cli
    from fusionforge.dataset import Dataset

    with ScriptedServer([completion(f"```python\n{BROKEN}```"), completion(f"```python\n{GOOD}```")]) as server:
        assert cli.main(llm_run_args(tmp_path, server.url)) == 0
    out = capsys.readouterr().out
    assert "FAILURE ANALYSIS - ATTEMPT 1" in out and "=== ATTEMPT 2:" in out
    second_request = server.requests[1]["messages"]
    assert "FAILURE ANALYSIS - ATTEMPT 1" in second_request[-1]["content"] and "cheat" in second_request[-1]["content"]
    [record] = Dataset(tmp_path / "data").records()
    assert record["implementer"] == "llm" and record["model"] == "served-model" and record["attempts"] == 2
    assert record["usage"]["total_tokens"] == USAGE["total_tokens"]
    [log] = (tmp_path / "runs").glob("*/001-*")
    first = json.loads((log / "attempt_1.json").read_text())
    assert first["failure"]["category"] == "cheat" and first["usage"]["prompt_tokens"] == USAGE["prompt_tokens"]


def test_run_with_an_unreachable_endpoint_is_a_usage_error(tmp_path, capsys):
    from fusionforge import cli

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    assert cli.main(llm_run_args(tmp_path, closed)) == 2
    err = capsys.readouterr().err
    assert "cannot reach the endpoint" in err and len(err.strip().splitlines()) == 1


def test_run_without_the_key_is_a_usage_error(tmp_path, capsys, monkeypatch):
    from fusionforge import cli

    monkeypatch.delenv(KEY_ENV)
    assert cli.main(llm_run_args(tmp_path, "http://127.0.0.1:9/v1")) == 2
    assert KEY_ENV in capsys.readouterr().err


def test_an_eval_of_an_endpoint_counts_each_sample_and_its_tokens(tmp_path, capsys, monkeypatch):
    """Two samples of one suite task: a reply without a file (incorrect), then a correct file; tokens and the
    price the endpoint reports are summed."""
    from fusionforge import cli, evaluation

    spec = json.loads((evaluation.SUITES_DIR / "small-v1.json").read_text())["tasks"][0]
    (tmp_path / "one.json").write_text(json.dumps({"name": "one", "tasks": [spec]}))
    monkeypatch.setattr(evaluation, "SUITES_DIR", tmp_path)
    good = generate(TaskGenerator().generate(spec["seed"], spec["difficulty"], spec["dtype"]))
    priced = {**USAGE, "cost": 0.002}  # an endpoint that reports the price of each request
    with ScriptedServer([completion("No file this time.", usage=priced),
                         completion(f"```python\n{good}```", usage=priced)]) as server:
        assert cli.main(["eval", "--suite", "one", "--samples", "2", "--implementer", "llm", "--model", "test-model",
                         "--base-url", server.url, "--api-key-env", KEY_ENV, "--out", str(tmp_path / "evals"),
                         "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    metrics = result["metrics"]
    assert metrics["samples"] == 2 and metrics["correctness"] == 0.5 and metrics["pass_at_k"] == {"1": 0.5}
    assert metrics["usage"] == {"requests": 2, "prompt_tokens": 2 * USAGE["prompt_tokens"],
                                "completion_tokens": 2 * USAGE["completion_tokens"], "cost": pytest.approx(0.004)}
    assert result["implementer"] == "llm" and result["model"] == "test-model"
