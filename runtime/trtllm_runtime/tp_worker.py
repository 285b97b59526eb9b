"""One rank of a tensor-parallel job started by a driving process (orchestrator mode, see
parallel.py): ``mpiexec -n N python -m trtllm_runtime.tp_worker --engine-dir D --options JSON
--connect SOCKET``. Rank 0 connects to the driving process, reports the startup, serves its
calls (enqueue, cancel, stats, shutdown) and streams the responses back; the other ranks follow
rank 0 until it shuts down. Not a user-facing CLI."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

from trtllm_runtime.executor import ExecutorOptions, make_core_executor
from trtllm_runtime.parallel import read_rank_config, world_comm

log = logging.getLogger("trtllm_runtime.tp_worker")

_CALLS = ("enqueue_batch", "stats")


def serve(executor: Any, conn: Connection) -> None:
    """Rank 0: runs the driving process's calls until it says shutdown or goes away."""
    send_lock = threading.Lock()
    stopping = threading.Event()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    def pump() -> None:
        while not stopping.is_set():
            responses = executor.await_responses(0.05)
            if responses:
                send(("responses", responses))

    pump_thread = threading.Thread(target=pump, name="trtllm-tp-responses", daemon=True)
    pump_thread.start()
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                log.warning("the driving process went away; shutting down")
                break
            if message[0] == "shutdown":
                break
            if message[0] == "cancel":
                executor.cancel(message[1])
                continue
            _, call_id, method, args, kwargs = message
            # Under send_lock: the reply to an enqueue goes out before any response of its request.
            with send_lock:
                try:
                    if method not in _CALLS:
                        raise ValueError(f"unknown call {method!r}")
                    reply = ("reply", call_id, True, getattr(executor, method)(*args, **kwargs))
                except (ValueError, TypeError, RuntimeError) as e:
                    reply = ("reply", call_id, False, (type(e).__name__, str(e)))
                conn.send(reply)
    finally:
        executor.shutdown()  # finishes what is in flight as cancelled; the followers stop too
        stopping.set()
        pump_thread.join()
        try:
            leftovers = executor.await_responses(0.0)
            if leftovers:
                send(("responses", leftovers))
            send(("closed",))
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trtllm_runtime.tp_worker", description=__doc__)
    p.add_argument("--engine-dir", type=Path, required=True)
    p.add_argument("--options", required=True, help="ExecutorOptions as JSON")
    p.add_argument("--connect", required=True, help="the driving process's Unix socket")
    args = p.parse_args(argv)
    comm = world_comm()
    logging.basicConfig(level=logging.INFO, format=f"[trtllm rank {comm.rank}] %(message)s")
    # Rank 0 connects first, so that it can report a failed startup (any rank's) to the driver.
    conn = Client(args.connect, family="AF_UNIX") if comm.rank == 0 else None
    try:
        config = read_rank_config(args.engine_dir, comm)
        options = ExecutorOptions(**json.loads(args.options))
        executor = make_core_executor(args.engine_dir / config["engine_files"][comm.rank], options, comm)
    except (RuntimeError, ValueError, OSError) as e:
        if conn is not None:
            conn.send(("startup_error", str(e)))
            conn.close()
        return 1
    if conn is None:
        executor.shutdown()  # a follower: returns once rank 0 has shut down
        return 0
    conn.send(("ready", {"model_info": executor.model_info, "num_kv_blocks": executor.num_kv_blocks}))
    serve(executor, conn)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
