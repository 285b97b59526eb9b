"""A Python handle on the C++ executor: one thread routes its responses to per-request streams.

The C++ executor runs the iteration loop on its own thread; `await_responses` releases the GIL
while it waits. Every front end (ModelRunner, LLM, the server) submits through `ExecutorClient`
and reads a `RequestHandle`, so many callers can wait on their own requests concurrently.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from trtllm_runtime import _core

log = logging.getLogger(__name__)

SCHEDULER_POLICIES = ("max_utilization", "guaranteed_no_evict")


@dataclass
class ExecutorOptions:
    """Runtime knobs that need no rebuild (the engine fixes the upper limits)."""

    tokens_per_block: int = 32
    kv_cache_bytes: int = 0              # 0: free_memory_fraction of the available memory
    free_memory_fraction: float = 0.5
    enable_prefix_reuse: bool = True
    enable_chunked_context: bool = True
    scheduler_policy: str = "max_utilization"
    max_batch_size: int = 0              # 0: the engine's
    max_num_tokens: int = 0              # 0: the engine's


class EngineDirError(ValueError):
    """The engine dir is missing or incomplete; the message names the missing file."""


def read_engine_dir(engine_dir: str | Path, rank: int | None = None) -> dict[str, Any]:
    """The engine dir's config.json, after checking that every file it names exists (with
    `rank`: only that rank's engine file, which may be the only one on its machine)."""
    engine_dir = Path(engine_dir)
    config_path = engine_dir / "config.json"
    if not engine_dir.is_dir():
        raise EngineDirError(f"engine dir {engine_dir} does not exist")
    if not config_path.is_file():
        raise EngineDirError(f"{engine_dir} is not an engine dir: config.json is missing")
    try:
        config = json.loads(config_path.read_text())
        files = config["engine_files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise EngineDirError(f"{config_path} is not an engine config: {e}") from None
    if rank is not None:
        if not 0 <= rank < len(files):
            raise EngineDirError(f"{engine_dir} has engine files for {len(files)} rank(s); there is no rank {rank}")
        files = [files[rank]]
    for name in files:
        if not (engine_dir / name).is_file():
            raise EngineDirError(f"engine dir {engine_dir} is missing {name}")
    return config


# Clients still open when the interpreter exits are closed by an atexit hook. Python stops daemon
# threads abruptly at exit, and the router stopped inside the C++ executor would abort the process
# ("terminate called without an active exception"). For tensor parallelism the hook also runs
# before MPI_Finalize and while the ranks can still talk: rank 0 broadcasts its shutdown, the
# followers' close returns on it. Re-registered on each client so it runs before hooks registered
# since (mpi4py's).
_OPEN_CLIENTS: "weakref.WeakSet[ExecutorClient]" = weakref.WeakSet()


def _close_at_exit(client: "ExecutorClient") -> None:
    atexit.unregister(_close_open_clients)
    atexit.register(_close_open_clients)
    _OPEN_CLIENTS.add(client)


def _close_open_clients() -> None:
    for client in list(_OPEN_CLIENTS):
        client.close()


@dataclass
class RequestHandle:
    """The stream of responses of one request."""

    request_id: int
    client: "ExecutorClient" = field(repr=False)
    # Set: the router thread calls it with each response instead of queueing it (an asyncio or
    # Triton front end forwards it without a thread blocked per request). It must not block.
    on_response: Callable[[dict], None] | None = field(default=None, repr=False)
    _queue: "queue.Queue[dict]" = field(default_factory=queue.Queue, repr=False)

    def responses(self, timeout_s: float | None = None) -> Iterator[dict]:
        """Yields response dicts (new `tokens`, optional logprobs/logits) until the finished one."""
        while True:
            try:
                response = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                raise TimeoutError(f"request {self.request_id}: no response within {timeout_s} s") from None
            yield response
            if response["finished"]:
                return

    def cancel(self) -> None:
        self.client.cancel(self.request_id)


def make_core_executor(engine_path: str | Path, options: ExecutorOptions, comm: Any = None) -> Any:
    """A `_core.Executor` on one engine file; `comm` (a `_core.MpiComm`) for a tensor-parallel rank."""
    if options.scheduler_policy not in SCHEDULER_POLICIES:
        raise ValueError(f"scheduler_policy must be one of {SCHEDULER_POLICIES}, got {options.scheduler_policy!r}")
    return _core.Executor(
        str(engine_path), tokens_per_block=options.tokens_per_block, kv_cache_bytes=options.kv_cache_bytes,
        free_memory_fraction=options.free_memory_fraction, enable_prefix_reuse=options.enable_prefix_reuse,
        enable_chunked_context=options.enable_chunked_context, scheduler_policy=options.scheduler_policy,
        max_batch_size=options.max_batch_size, max_num_tokens=options.max_num_tokens, comm=comm)


class ExecutorClient:
    """Routes the responses of an executor to per-request handles. `executor`: use this one
    instead of opening `engine_path` (a tensor-parallel job's proxy, see parallel.py); `comm`:
    open `engine_path` as this rank of a tensor-parallel job. On a follower rank there is
    nothing to route: `submit` raises and `close` waits for rank 0 to close."""

    def __init__(self, engine_path: str | Path | None, options: ExecutorOptions | None = None, *,
                 comm: Any = None, executor: Any = None) -> None:
        options = options or ExecutorOptions()
        self.options = options
        self.executor = executor if executor is not None else make_core_executor(engine_path, options, comm)
        self.model_info: dict[str, Any] = self.executor.model_info
        self.is_leader: bool = self.executor.is_leader
        self._handles: dict[int, RequestHandle] = {}
        self._early: dict[int, list[dict]] = {}  # responses that beat their handle's registration
        self._lock = threading.Lock()
        self._closed = False
        self._router = threading.Thread(target=self._route, name="trtllm-responses", daemon=True)
        if self.is_leader:
            self._router.start()
        _close_at_exit(self)

    def submit_batch(self, requests: list[dict[str, Any]],
                     on_response: Callable[[dict], None] | Sequence[Callable[[dict], None] | None] | None = None
                     ) -> list[RequestHandle]:
        """Queue the requests ({"prompt": ids, **keyword arguments of `_core.Executor.enqueue`})
        at once: the scheduler sees them together, so a batch's steps (and the numerics that
        depend on the batch, e.g. which GEMM kernel runs) do not depend on how fast it was queued.
        A bad one queues none (ValueError). With `on_response` (one callback for all, or one per
        request), responses go to it on the router thread instead of `handle.responses()`."""
        callbacks = list(on_response) if isinstance(on_response, (list, tuple)) else [on_response] * len(requests)
        with self._lock:
            if self._closed:
                raise RuntimeError("executor is closed")
            ids = self.executor.enqueue_batch([{**r, "prompt": list(r["prompt"])} for r in requests])
            handles = []
            for request_id, callback in zip(ids, callbacks):
                handle = RequestHandle(request_id, self, callback)
                self._handles[request_id] = handle
                for response in self._early.pop(request_id, []):
                    self._deliver(handle, response)
                handles.append(handle)
        return handles

    def cancel(self, request_id: int) -> None:
        self.executor.cancel(request_id)

    def stats(self) -> dict[str, Any]:
        return self.executor.stats()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.executor.shutdown()
        if self._router.is_alive():
            self._router.join(timeout=10)

    def __enter__(self) -> "ExecutorClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deliver(self, handle: RequestHandle, response: dict) -> None:
        response.setdefault("received_s", time.perf_counter())  # for TTFT / inter-token latency
        if response["finished"]:
            self._handles.pop(handle.request_id, None)
        if handle.on_response is None:
            handle._queue.put(response)
            return
        try:
            handle.on_response(response)
        except Exception:  # a broken consumer must not kill the router every other request shares
            log.exception("on_response callback of request %d failed", handle.request_id)

    def _route(self) -> None:
        while True:
            responses = self.executor.await_responses(0.05)
            with self._lock:
                for response in responses:
                    handle = self._handles.get(response["request_id"])
                    if handle is None:
                        self._early.setdefault(response["request_id"], []).append(response)
                    else:
                        self._deliver(handle, response)
                if self._closed and not responses and not self._handles:
                    return
                if self._closed and not responses:
                    # The executor finished everything it had on shutdown; nothing more will come.
                    for handle in list(self._handles.values()):
                        self._deliver(handle, {"request_id": handle.request_id, "tokens": [], "finished": True,
                                               "finish_reason": "cancelled", "error": "executor closed"})
                    return


