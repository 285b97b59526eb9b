"""trtllm-serve under faults: clients that disconnect, a full queue, bad requests, an API key,
shutdown with requests in flight."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Iterator

import pytest
httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("pydantic", reason="the serve extra is not installed")
pytest.importorskip("jinja2", reason="the serve extra is not installed")

from conftest import build_engine
from serve_helpers import serve
from tiny_tokenizer import add_tokenizer

API_KEY = "sekret-key"
MAX_SEQ_LEN = 4096
LONG = {"prompt": [1, 5, 6, 7], "max_tokens": MAX_SEQ_LEN - 8, "ignore_eos": True, "stream": True}


@pytest.fixture(scope="module")
def long_engine(hf_models, tmp_path_factory):
    """The tiny llama3 with room for requests long enough to still run while the test acts."""
    out = tmp_path_factory.mktemp("long_engine")
    engine = build_engine(hf_models["llama3"][0], out, max_seq_len=MAX_SEQ_LEN)
    return add_tokenizer(engine, out / "text_engine")


@pytest.fixture(scope="module")
def server(long_engine, tmp_path_factory):
    with serve(long_engine, tmp_path_factory.mktemp("logs"), "--max-queue", "2", "--api-key", API_KEY,
               "--kv-cache-bytes", str(64 << 20)) as s:
        yield s


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


def _events(response: httpx.Response) -> Iterator[dict]:
    """The stream's events. Keep the iterator while reading: dropping it closes the connection."""
    for line in response.iter_lines():
        if line.startswith("data: {"):
            yield json.loads(line[len("data: "):])


def _assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


def test_disconnect_mid_stream_cancels_and_returns_the_kv_blocks(server, http):
    with http.stream("POST", "/v1/completions", json=LONG) as response:
        assert response.status_code == 200
        events = _events(response)
        next(events)
        busy = server.metrics()
        assert busy["trtllm_kv_cache_blocks_used"] > 0 and busy["trtllm_queue_depth"] == 1
    # The client is gone long before 4088 tokens: the server cancels, the blocks come back.
    idle = server.wait_for_metrics(trtllm_kv_cache_blocks_used=0, trtllm_num_requests_running=0,
                                   trtllm_queue_depth=0)
    assert idle["trtllm_generation_tokens_total"] < MAX_SEQ_LEN - 8
    assert idle["trtllm_kv_cache_blocks_free"] == idle["trtllm_kv_cache_blocks_total"]


def test_disconnect_while_waiting_for_a_whole_response_cancels_it(server):
    def give_up() -> None:  # a non-streaming client that times out before the answer
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/completions", json={**LONG, "stream": False}, timeout=1.0,
                       headers={"Authorization": f"Bearer {API_KEY}"})

    thread = threading.Thread(target=give_up)
    thread.start()
    thread.join()
    server.wait_for_metrics(trtllm_kv_cache_blocks_used=0, trtllm_num_requests_running=0, trtllm_queue_depth=0)


def test_full_queue_answers_429_then_recovers(server, http):
    with http.stream("POST", "/v1/completions", json=LONG) as a, http.stream("POST", "/v1/completions", json=LONG) as b:
        events = [_events(a), _events(b)]
        for e in events:
            next(e)
        error = _assert_openai_error(http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2}), 429)
        assert error["code"] == "queue_full" and "2 requests in flight" in error["message"]
        assert server.metrics()["trtllm_queue_depth"] == 2
    server.wait_for_metrics(trtllm_queue_depth=0, trtllm_kv_cache_blocks_used=0)
    response = http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2})
    assert response.status_code == 200 and response.json()["choices"][0]["finish_reason"]


@pytest.mark.parametrize("body, param", [
    ({"prompt": "hello", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "hello", "max_tokens": "16"}, "max_tokens"),
    ({"prompt": "hello", "temperature": 2.5}, "temperature"),
    ({"prompt": "hello", "top_p": 0}, "top_p"),
    ({"prompt": "hello", "n": 0}, "n"),
    ({"prompt": "hello", "logprobs": 21}, "logprobs"),
    ({"prompt": "hello", "presence_penalty": -3}, "presence_penalty"),
    ({"prompt": "hello", "stop": ""}, "stop"),
    ({"prompt": "hello", "seed": -1}, "seed"),
    ({"prompt": "hello", "stream": "yes"}, "stream"),
    ({"prompt": "hello", "echo": True}, "echo"),
    ({"prompt": "hello", "unknown_field": 1}, "unknown_field"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"max_tokens": 3}, "prompt"),
    ({"prompt": [1, 999]}, None),
    ({"prompt": "hello", "model": "not-this-one"}, "model"),
])
def test_bad_completion_parameters_give_400_naming_the_field(http, body, param):
    response = http.post("/v1/completions", json=body)
    expected = 404 if param == "model" else 400
    error = _assert_openai_error(response, expected, param)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("body, param", [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user"}], "top_logprobs": 2}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools"),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
     "response_format.type"),
])
def test_bad_chat_parameters_give_400_naming_the_field(http, body, param):
    _assert_openai_error(http.post("/v1/chat/completions", json=body), 400, param)


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"])
def test_malformed_bodies_give_400(http, content):
    response = http.post("/v1/completions", content=content, headers={"Content-Type": "application/json"})
    _assert_openai_error(response, 400)


def test_oversize_prompt_gives_400_naming_the_limit(http):
    long_prompt = " ".join(["hello"] * MAX_SEQ_LEN)
    error = _assert_openai_error(http.post("/v1/completions", json={"prompt": long_prompt, "max_tokens": 1}), 400,
                                 "prompt")
    assert error["code"] == "context_length_exceeded" and f"is {MAX_SEQ_LEN} tokens" in error["message"]
    error = _assert_openai_error(http.post("/v1/completions", json={"prompt": "hello", "max_tokens": MAX_SEQ_LEN}),
                                 400, "max_tokens")
    assert "max_seq_len" in error["message"]
    chat = {"messages": [{"role": "user", "content": long_prompt}]}
    _assert_openai_error(http.post("/v1/chat/completions", json=chat), 400, "messages")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
                                     {"Authorization": f"Basic {API_KEY}"}])
def test_api_key_is_required_on_v1_routes(server, headers):
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")):
        response = httpx.request(method, f"{server.url}{path}", headers=headers, json={"prompt": "hi"})
        error = _assert_openai_error(response, 401)
        assert error["code"] == "invalid_api_key"
    assert httpx.get(f"{server.url}/health").status_code == 200  # probes need no key
    assert httpx.get(f"{server.url}/metrics").status_code == 200


def test_unknown_routes_and_methods_answer_in_the_error_shape(http):
    _assert_openai_error(http.get("/v1/nothing"), 404)
    _assert_openai_error(http.get("/v1/completions"), 405)


def test_metrics_count_answers_by_status(server):
    m = httpx.get(f"{server.url}/metrics").text
    assert 'trtllm_requests_total{endpoint="/v1/completions"' in m
    for name in ("trtllm_time_to_first_token_seconds_bucket", "trtllm_inter_token_latency_seconds_bucket",
                 "trtllm_generation_tokens_per_second", "trtllm_kv_cache_blocks_used", "trtllm_queue_depth",
                 "trtllm_num_requests_running", "trtllm_num_requests_waiting"):
        assert name in m


def test_sigterm_lets_in_flight_requests_finish_then_exits(long_engine, tmp_path):
    with serve(long_engine, tmp_path, "--kv-cache-bytes", str(64 << 20)) as server:
        events: list[dict] = []

        def stream() -> None:
            body = {"prompt": "hello", "max_tokens": 1000, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as r:
                events.extend(_events(r))

        thread = threading.Thread(target=stream)
        thread.start()
        deadline = time.monotonic() + 30
        while not events and time.monotonic() < deadline:
            time.sleep(0.01)
        # uvicorn re-raises the signal once it has shut down, so the exit is by SIGTERM.
        assert server.stop() in (0, -signal.SIGTERM)
        thread.join(10)
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        assert events[-1]["usage"]["completion_tokens"] == 1000
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health")


def test_sigterm_cancels_what_outlasts_the_graceful_timeout(long_engine, tmp_path):
    with serve(long_engine, tmp_path, "--kv-cache-bytes", str(64 << 20), "--graceful-timeout-s", "0.5") as server:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=LONG, timeout=60) as response:
            events = _events(response)
            next(events)
            start = time.monotonic()
            assert server.stop() in (0, -signal.SIGTERM)
            assert time.monotonic() - start < 15  # not the minutes 4088 tokens would take
            with pytest.raises(httpx.RemoteProtocolError):  # the stream is cut, not completed
                for _ in events:
                    pass
        assert "Traceback" not in server.log()


def test_cli_bad_engine_dir_is_one_line_and_exit_2(tmp_path, capsys):
    from trtllm_runtime.cli.serve import main

    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trtllm-serve: error:") and "does not exist" in err and err.count("\n") == 1


@pytest.mark.parametrize("args", [["--max-queue", "0"], ["--port", "70000"], ["--api-key", ""]])
def test_cli_bad_arguments_exit_2(long_engine, args, capsys):
    from trtllm_runtime.cli.serve import main

    with pytest.raises(SystemExit) as e:
        main([str(long_engine), *args])
    assert e.value.code == 2 and "trtllm-serve: error:" in capsys.readouterr().err
