"""The OpenAI-compatible HTTP app (Starlette): /v1/completions, /v1/chat/completions,
/v1/models, /health and /metrics, over one engine's executor.

Backpressure: the server counts the requests it has admitted and not finished; past
`max_queue` it answers 429 at once instead of queueing without bound. A request ends when its
response is fully sent or its client goes away; either way its unfinished executor requests
are cancelled, so their KV blocks return to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from trtllm_runtime.executor import ExecutorOptions
from trtllm_runtime.llm import LLM, CompletionOutput, SamplingParams
from trtllm_runtime.serve.chat_template import ChatTemplate, ChatTemplateError, find_chat_template
from trtllm_runtime.serve.generation import Generation, stream_delta
from trtllm_runtime.serve.metrics import ServerMetrics
from trtllm_runtime.serve.protocol import (APIError, ChatCompletionRequest, CompletionRequest, SamplingFields,
                                           validation_error)

log = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    engine_dir: Path
    model_name: str = ""                  # "": the engine dir's name
    max_queue: int = 1024                 # admitted, unfinished requests before 429
    api_key: str | None = None            # None: no authentication
    chat_template: Path | None = None     # None: the engine dir's
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)

    def __post_init__(self) -> None:
        self.engine_dir = Path(self.engine_dir)
        self.model_name = self.model_name or self.engine_dir.resolve().name
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")


class ModelServer:
    """What the routes share: the engine, its tokenizer and chat template, metrics, admissions."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.llm = LLM(config.engine_dir, **dataclasses.asdict(config.executor))
        self.tokenizer = self.llm.tokenizer
        self.max_seq_len = self.llm.runner.max_seq_len
        self.metrics = ServerMetrics(config.model_name)
        self.chat_template = self._load_chat_template()
        self.in_flight = 0
        self.closing = False
        self._generations: set[Generation] = set()

    def _load_chat_template(self) -> ChatTemplate | None:
        tokenizer_config = self.tokenizer.config if self.tokenizer is not None else {}
        if self.config.chat_template is not None:
            source: str | None = self.config.chat_template.read_text()
        else:
            source = find_chat_template(self.config.engine_dir, tokenizer_config)
        return ChatTemplate(source, tokenizer_config) if source is not None else None

    def close(self) -> None:
        """Cancel what is still running (graceful shutdown already let it finish), stop the executor."""
        if self.closing:
            return
        self.closing = True
        for generation in list(self._generations):
            generation.cancel()
        self.llm.close()

    def admit(self) -> Callable[[], None]:
        """Takes one of `max_queue` slots and returns its release (safe to call twice); 429 when
        none is free, 503 while shutting down. Only the event loop thread calls this."""
        if self.closing:
            raise APIError(503, "the server is shutting down", "server_error", code="shutting_down")
        if self.in_flight >= self.config.max_queue:
            raise APIError(429, f"the server's queue is full ({self.config.max_queue} requests in flight); "
                                f"retry later", "rate_limit_error", code="queue_full")
        self.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1
        return release

    def check_api_key(self, request: Request) -> None:
        if self.config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        # compare_digest: the time taken does not tell how much of a guessed key was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.config.api_key.encode()):
            raise APIError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", code="invalid_api_key")

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.config.model_name:
            raise APIError(404, f"model {model!r} does not exist; this server serves {self.config.model_name!r}",
                           param="model", code="model_not_found")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if self.tokenizer is None:
            raise APIError(400, f"{self.config.engine_dir} has no tokenizer.json: send the prompt as token ids",
                           param="prompt")
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def check_length(self, prompt_len: int, max_tokens: int, param: str) -> None:
        if prompt_len + max_tokens > self.max_seq_len:
            raise APIError(400, f"this model's maximum context length (max_seq_len) is {self.max_seq_len} tokens; "
                                f"the request has {prompt_len} prompt tokens + max_tokens {max_tokens} = "
                                f"{prompt_len + max_tokens}; shorten the prompt or lower max_tokens",
                           param=param if prompt_len >= self.max_seq_len else "max_tokens",
                           code="context_length_exceeded")

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False) if self.tokenizer else str(token)

    def start(self, prompts: list[list[int]], params: SamplingParams, arrival_s: float) -> Generation:
        generation = Generation(self.llm, prompts, params, self.metrics, arrival_s)
        try:
            generation.start()
        except ValueError as e:  # the executor's boundary check: vocabulary, KV cache size, sampling ranges
            raise APIError(400, str(e)) from None
        self._generations.add(generation)
        self.metrics.prompt_tokens.labels(self.config.model_name).inc(sum(len(p) for p in prompts))
        return generation

    def finish(self, generation: Generation) -> None:
        """The request is over (answered, failed or abandoned): cancel what is unfinished."""
        generation.cancel()
        self._generations.discard(generation)
        for stream in generation.streams:
            for reason in stream.finish:
                self.metrics.finished.labels(self.config.model_name, reason or "abort").inc()


# ---- request handling ------------------------------------------------------------------------------

async def _read(request: Request, model: type[SamplingFields]) -> Any:
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        if e.errors()[0]["type"] == "json_invalid":
            raise APIError(400, f"the request body is not valid JSON: {e.errors()[0]['msg']}") from None
        raise validation_error(e) from None


def _sampling(req: SamplingFields, max_tokens: int, logprobs: int | None) -> SamplingParams:
    try:
        return req.sampling_params(max_tokens, logprobs)
    except ValueError as e:
        raise APIError(400, str(e)) from None


async def completions(request: Request) -> Response:
    server: ModelServer = request.app.state.server
    server.check_api_key(request)
    arrival = time.perf_counter()
    req: CompletionRequest = await _read(request, CompletionRequest)
    server.check_model(req.model)
    prompts = [server.encode(p) if isinstance(p, str) else p for p in req.prompts()]
    max_tokens = req.max_tokens or 16
    for ids in prompts:
        server.check_length(len(ids), max_tokens, "prompt")
    params = _sampling(req, max_tokens, req.logprobs)
    return await _respond(request, server, req, prompts, params, arrival, _CompletionFormat(server, req))


async def chat_completions(request: Request) -> Response:
    server: ModelServer = request.app.state.server
    server.check_api_key(request)
    arrival = time.perf_counter()
    req: ChatCompletionRequest = await _read(request, ChatCompletionRequest)
    server.check_model(req.model)
    if server.chat_template is None:
        raise APIError(400, f"{server.config.engine_dir} has no chat template (chat_template.jinja or "
                            f"tokenizer_config.json's chat_template); start the server with --chat-template",
                       param="messages")
    try:
        text = server.chat_template.render(req.template_messages(), req.add_generation_prompt)
    except ChatTemplateError as e:
        raise APIError(400, str(e), param="messages") from None
    ids = server.encode(text, add_special_tokens=False)  # the template writes BOS itself, as in HF
    max_tokens = req.requested_max_tokens()
    if max_tokens is None:  # OpenAI's default: whatever room the context leaves
        max_tokens = max(1, server.max_seq_len - len(ids))
    server.check_length(len(ids), max_tokens, "messages")
    top = (req.top_logprobs or 0) if req.logprobs else None
    params = _sampling(req, max_tokens, top)
    return await _respond(request, server, req, [ids], params, arrival, _ChatFormat(server, req))


async def _respond(request: Request, server: ModelServer, req: SamplingFields, prompts: list[list[int]],
                   params: SamplingParams, arrival: float, fmt: "_Format") -> Response:
    release = server.admit()
    try:
        generation = server.start(prompts, params, arrival)
    except BaseException:
        release()
        raise

    def done() -> None:
        server.finish(generation)
        release()

    if req.stream:
        return _EventStream(_sse(generation, fmt, [len(p) for p in prompts], req.include_usage), done)
    try:
        outputs = await _until_disconnected(request, _collect(generation))
    finally:
        done()
    if outputs is None:
        return Response(status_code=499)  # nobody is listening; the status only reaches the logs
    return JSONResponse(fmt.response(outputs, [len(p) for p in prompts], params.n))


async def _collect(generation: Generation) -> list[list[CompletionOutput]]:
    last: dict[int, Any] = {}
    try:
        async for event in generation.events():
            last[event.prompt] = event.output
    except RuntimeError as e:
        raise APIError(500, str(e), "server_error") from None
    return [last[p].outputs for p in sorted(last)]


async def _until_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """The result of `work`, or None once the client disconnects (work is then cancelled)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler itself is cancelled (shutdown): leave no task behind
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        log.info("client disconnected; request cancelled")
        return None
    return task.result()


async def _sse(generation: Generation, fmt: "_Format", prompt_lens: list[int],
               include_usage: bool) -> AsyncIterator[str]:
    n = generation.streams[0].params.n
    sent_text = [[0] * n for _ in prompt_lens]
    sent_tokens = [[0] * n for _ in prompt_lens]
    last: dict[int, list[CompletionOutput]] = {}
    stops = generation.streams[0].params.stop
    for chunk in fmt.first_chunks(len(prompt_lens) * n):
        yield _event(chunk)
    try:
        async for event in generation.events():
            p, i = event.prompt, event.sample
            last[p] = event.output.outputs
            out = event.output.outputs[i]
            delta = stream_delta(out.text, sent_text[p][i], out.finish_reason is not None, stops)
            new_tokens = out.token_ids[sent_tokens[p][i]:]
            if delta or new_tokens or out.finish_reason is not None:
                yield _event(fmt.chunk(p * n + i, delta, out, sent_tokens[p][i]))
            sent_text[p][i] += len(delta)
            sent_tokens[p][i] = len(out.token_ids)
    except RuntimeError as e:
        yield _event(APIError(500, str(e), "server_error").body())
    else:
        if include_usage:
            yield _event(fmt.usage_chunk([last[p] for p in sorted(last)], prompt_lens))
    yield "data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class _EventStream(StreamingResponse):
    """Server-sent events whose `on_close` runs however the response ends: fully sent, failed,
    or cut by a disconnected client (Starlette then cancels the body iterator mid-way)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (OSError, ClientDisconnect):  # the client went away mid-send
            log.info("client disconnected mid-stream; request cancelled")
        finally:
            self._on_close()


# ---- response formats ------------------------------------------------------------------------------

def _usage(prompt_lens: list[int], outputs: list[list[CompletionOutput]]) -> dict[str, int]:
    completion = sum(len(o.token_ids) for per_prompt in outputs for o in per_prompt)
    prompt = sum(prompt_lens)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Format:
    """How one endpoint words its responses and stream chunks."""

    object_name = chunk_name = id_prefix = ""

    def __init__(self, server: ModelServer, req: Any) -> None:
        self.server, self.req = server, req
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def envelope(self, name: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": name, "created": self.created, "model": self.server.config.model_name,
                "choices": choices}

    def response(self, outputs: list[list[CompletionOutput]], prompt_lens: list[int], n: int) -> dict[str, Any]:
        choices = [self.choice(p * n + o.index, o) for p, per_prompt in enumerate(outputs) for o in per_prompt]
        return {**self.envelope(self.object_name, choices), "usage": _usage(prompt_lens, outputs)}

    def usage_chunk(self, outputs: list[list[CompletionOutput]], prompt_lens: list[int]) -> dict[str, Any]:
        return {**self.envelope(self.chunk_name, []), "usage": _usage(prompt_lens, outputs)}

    def first_chunks(self, num_choices: int) -> list[dict[str, Any]]:
        return []

    def choice(self, index: int, out: CompletionOutput) -> dict[str, Any]:
        raise NotImplementedError

    def chunk(self, index: int, delta: str, out: CompletionOutput, first_token: int) -> dict[str, Any]:
        raise NotImplementedError


class _CompletionFormat(_Format):
    object_name = chunk_name = "text_completion"
    id_prefix = "cmpl"

    def choice(self, index: int, out: CompletionOutput) -> dict[str, Any]:
        return {"index": index, "text": out.text, "logprobs": self.logprobs(out, 0),
                "finish_reason": out.finish_reason}

    def chunk(self, index: int, delta: str, out: CompletionOutput, first_token: int) -> dict[str, Any]:
        return self.envelope(self.chunk_name, [{"index": index, "text": delta,
                                                "logprobs": self.logprobs(out, first_token),
                                                "finish_reason": out.finish_reason}])

    def logprobs(self, out: CompletionOutput, first: int) -> dict[str, Any] | None:
        """The legacy completions shape: parallel lists over the tokens from `first` on."""
        if out.logprobs is None:
            return None
        tokens, token_logprobs, top, offsets = [], [], [], []
        offset = 0
        for token, entry in zip(out.token_ids[first:], out.logprobs[first:]):
            text = self.server.token_text(token)
            tokens.append(text)
            token_logprobs.append(entry[token])
            top.append({self.server.token_text(t): lp for t, lp in entry.items()})
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


class _ChatFormat(_Format):
    object_name, chunk_name = "chat.completion", "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def choice(self, index: int, out: CompletionOutput) -> dict[str, Any]:
        return {"index": index, "message": {"role": "assistant", "content": out.text},
                "logprobs": self.logprobs(out, 0), "finish_reason": out.finish_reason}

    def first_chunks(self, num_choices: int) -> list[dict[str, Any]]:
        # OpenAI opens every choice with the role and an empty content.
        return [self.envelope(self.chunk_name, [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                 "logprobs": None, "finish_reason": None}])
                for i in range(num_choices)]

    def chunk(self, index: int, delta: str, out: CompletionOutput, first_token: int) -> dict[str, Any]:
        return self.envelope(self.chunk_name, [{"index": index, "delta": {"content": delta} if delta else {},
                                                "logprobs": self.logprobs(out, first_token),
                                                "finish_reason": out.finish_reason}])

    def logprobs(self, out: CompletionOutput, first: int) -> dict[str, Any] | None:
        if out.logprobs is None:
            return None
        k = self.req.top_logprobs or 0
        content = []
        for token, entry in zip(out.token_ids[first:], out.logprobs[first:]):
            top = sorted(entry.items(), key=lambda kv: -kv[1])[:k]  # the entry adds the sampled token to the top k
            content.append({**self._token(token, entry[token]),
                            "top_logprobs": [self._token(t, lp) for t, lp in top]})
        return {"content": content}

    def _token(self, token: int, logprob: float) -> dict[str, Any]:
        text = self.server.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


# ---- the app ---------------------------------------------------------------------------------------

async def models(request: Request) -> Response:
    server: ModelServer = request.app.state.server
    server.check_api_key(request)
    return JSONResponse({"object": "list", "data": [{
        "id": server.config.model_name, "object": "model", "created": int(time.time()), "owned_by": "trtllm",
        "max_model_len": server.max_seq_len, "vocab_size": server.llm.runner.vocab_size}]})  # both: extensions


async def health(request: Request) -> Response:
    server: ModelServer = request.app.state.server
    if server.closing:
        return JSONResponse({"status": "shutting down"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    server: ModelServer = request.app.state.server
    body = server.metrics.render(server.llm.runner.client.stats(), server.in_flight)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error").body(),
                        status_code=500)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}").body(),
                        status_code=exc.status_code)


def _counted(endpoint: str, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Any]:
    """Counts answers by status code in trtllm_requests_total."""
    async def wrapped(request: Request) -> Response:
        server: ModelServer = request.app.state.server
        try:
            response = await handler(request)
        except APIError as e:
            server.metrics.request_answered(endpoint, e.status)
            raise
        server.metrics.request_answered(endpoint, response.status_code)
        return response
    return wrapped


def create_app(server: ModelServer) -> Starlette:
    """The ASGI app; it closes `server` (cancelling anything unfinished) when it shuts down."""
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        server.close()

    routes = [
        Route("/v1/completions", _counted("/v1/completions", completions), methods=["POST"]),
        Route("/v1/chat/completions", _counted("/v1/chat/completions", chat_completions), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _internal_error})
    app.state.server = server
    return app
