"""Tensor parallelism across processes, one per rank, placed by MPI.

An engine built with tp_size N > 1 (rank0.engine ... rank{N-1}.engine) runs in one of two ways:

* Under an MPI launcher (``mpirun -n N python script.py``, ``mpirun -n N trtllm-run ...``),
  every rank runs the same script, TensorRT-LLM's convention. ``ModelRunner.from_dir`` takes
  the rank from MPI and opens that rank's file; rank 0 leads (the request queue, the
  scheduler, KV block decisions, sampling) and broadcasts every iteration's batch plan; the
  others follow. ``generate`` returns the outputs on rank 0 and None on the other ranks.
* From one plain process (orchestrator mode): ``ModelRunner.from_dir`` / ``LLM(...)`` starts
  the N ranks itself with the MPI launcher (``mpiexec -n N python -m trtllm_runtime.tp_worker``)
  and talks to rank 0 over a Unix socket in a private temp dir: requests in, responses out.
  Like TensorRT-LLM's orchestrator, the driving process sits outside the ranks. It does not
  use MPI_Comm_spawn: Debian's MPICH (ch4:ucx) cannot spawn and a singleton Open MPI as root
  needs extra flags, while launching ``mpiexec`` works with every MPI.

Failures end the whole job quickly and say where: the ranks check their engine files and agree
before any runs (rank 0's error names each failed rank and its file); every collective has a
deadline (``TRTLLM_TP_TIMEOUT_S``, default 300 s); a rank that dies takes the job down
(the launcher's doing, or MPI_Abort); in orchestrator mode the driving process sees rank 0's
socket close and fails every request in flight with the launcher's exit code and log tail.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import queue
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from trtllm_runtime import _core
from trtllm_runtime.executor import EngineDirError, ExecutorOptions, read_engine_dir

log = logging.getLogger(__name__)

TIMEOUT_ENV = "TRTLLM_TP_TIMEOUT_S"
LAUNCHER_ENV = "TRTLLM_MPIEXEC"
# Set by Open MPI's mpirun, MPICH's Hydra (and Slurm's PMI) in every rank they start.
_RANK_ENV = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
_SIZE_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")

NO_MPI = ("this trtllm_runtime was built without MPI, which tensor parallelism (tp_size > 1) needs: install an "
          "MPI with its headers (e.g. `apt-get install mpich libmpich-dev`) and reinstall the package "
          "(pip install -e .)")


def timeout_s() -> float:
    """The deadline of every collective but a follower's idle wait (TRTLLM_TP_TIMEOUT_S, default 300)."""
    text = os.environ.get(TIMEOUT_ENV, "300")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return value


def launched_by_mpi() -> bool:
    """True when an MPI launcher started this process (its environment says so; MPI not touched)."""
    return any(name in os.environ for name in _RANK_ENV)


def launcher_rank() -> int:
    """This process's rank as the launcher's environment gives it; 0 outside a launcher."""
    for name in _RANK_ENV:
        if name in os.environ:
            return int(os.environ[name])
    return 0


@functools.cache
def world_comm() -> Any:
    """This process's `_core.MpiComm` over every rank of the MPI job (initializes MPI; collective
    on the first call)."""
    if not _core.mpi_available:
        raise RuntimeError(NO_MPI)
    comm = _core.MpiComm.world(timeout_s())
    for name in _SIZE_ENV:
        if name in os.environ and int(os.environ[name]) != comm.size:
            raise RuntimeError(
                f"the launcher started {os.environ[name]} ranks ({name}) but MPI sees {comm.size}: the launcher is "
                f"not the one of the MPI this trtllm_runtime was built with ({_core.mpi_library_version})")
    if comm.size > 1 and (warning := single_core_binding(os.sched_getaffinity(0), os.cpu_count() or 1, comm.rank)):
        log.warning(warning)
    return comm


def single_core_binding(affinity: set[int], cpu_count: int, rank: int) -> str | None:
    """A warning when the launcher bound this rank to one CPU of several: Open MPI's mpirun binds
    each rank to a core by default (-n <= 2), where the leader's scheduler, sampler, Python client
    and CUDA host threads then take turns on it."""
    if len(affinity) != 1 or cpu_count <= 1:
        return None
    return (f"rank {rank} is bound to one CPU core (CPU {next(iter(affinity))} of {cpu_count}), as Open MPI's mpirun "
            f"does by default: its host threads (scheduler, sampler, CUDA) share that core, which slows every "
            f"iteration. Launch with `mpirun --bind-to none` (or `--bind-to numa`)")


def read_rank_config(engine_dir: Path, comm: Any) -> dict[str, Any]:
    """The engine dir's config, read by every rank of `comm` (each checks its own engine file)
    and agreed on: RuntimeError on every rank when any failed, naming the rank and the file."""
    error, config = "", {}
    try:
        config = read_engine_dir(engine_dir, rank=comm.rank)
        if config["tp_size"] != comm.size:
            raise EngineDirError(f"{engine_dir} is sharded for tp_size {config['tp_size']}, but the MPI job has "
                                 f"{comm.size} rank(s): launch it with mpirun -n {config['tp_size']}")
    except (EngineDirError, OSError) as e:
        error = str(e)
    comm.check_all_ok(error, f"reading {engine_dir}")
    return config


# --- orchestrator mode -------------------------------------------------------------------------

def launch_ranks(engine_dir: Path, tp_size: int, options: ExecutorOptions) -> "RemoteExecutor":
    """Starts the `tp_size` ranks of `engine_dir` with the MPI launcher and returns rank 0's
    executor as seen from here, once every rank has loaded (or RuntimeError saying which failed)."""
    if not _core.mpi_available:
        raise RuntimeError(NO_MPI)
    command, env = launcher_command(tp_size)
    deadline_s = timeout_s()
    workdir = Path(tempfile.mkdtemp(prefix="trtllm-tp-"))  # mode 0700: only this user can connect
    address = str(workdir / "rank0.sock")
    log_path = workdir / "ranks.log"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    proc: subprocess.Popen | None = None
    try:
        server.bind(address)
        server.listen(1)
        server.settimeout(0.1)
        command += [sys.executable, "-m", "trtllm_runtime.tp_worker", "--engine-dir", str(engine_dir.resolve()),
                    "--options", json.dumps(dataclasses.asdict(options)), "--connect", address]
        log.info("starting %d ranks: %s (log: %s)", tp_size, shlex.join(command), log_path)
        with open(log_path, "wb") as log_file:
            # A session of its own: the whole launch (launcher, proxies, ranks) can be killed as a group.
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        deadline = time.monotonic() + deadline_s
        conn = _accept(server, proc, deadline, log_path)
        while not conn.poll(0.1):
            _check_alive(proc, deadline, log_path, "loading the engine")
        message = conn.recv()
        if message[0] == "startup_error":
            _wait_or_kill(proc, 30)
            raise RuntimeError(message[1])
        return RemoteExecutor(proc, conn, workdir, message[1])
    except BaseException:
        if proc is not None:
            _wait_or_kill(proc, 0)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        server.close()


def launcher_command(n: int) -> tuple[list[str], dict[str, str]]:
    """The launch command for n ranks and its environment."""
    env = dict(os.environ)
    custom = os.environ.get(LAUNCHER_ENV)
    if custom:
        base = shlex.split(custom)
    else:
        # The launcher of the MPI we run against first: Debian installs several side by side.
        library = _core.mpi_library_version
        names = (["mpiexec.openmpi", "mpirun.openmpi"] if "Open MPI" in library else
                 ["mpiexec.hydra", "mpiexec.mpich"] if "MPICH" in library else [])
        found = next((p for p in map(shutil.which, names + ["mpiexec", "mpirun"]) if p), None)
        if found is None:
            raise RuntimeError(f"the engine needs {n} ranks, started by an MPI launcher, and no mpiexec/mpirun is on "
                               f"PATH: install MPI's launcher, set {LAUNCHER_ENV}, or launch the ranks yourself: "
                               f"mpirun -n {n} python your_script.py")
        base = [found]
    version = subprocess.run(base[:1] + ["--version"], capture_output=True, text=True, timeout=30)
    if "Open MPI" in version.stdout + version.stderr or "OpenRTE" in version.stdout + version.stderr:
        base.append("--oversubscribe")  # more ranks than cores is fine for CPU tests
        base += ["--bind-to", "none"]  # not one core per rank: rank 0's host threads need several
        if os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return base + ["-n", str(n)], env


def _log_tail(log_path: Path, lines: int = 20) -> str:
    try:
        text = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _check_alive(proc: subprocess.Popen, deadline: float, log_path: Path, doing: str) -> None:
    code = proc.poll()
    if code is not None:
        raise RuntimeError(f"the tensor-parallel ranks exited with code {code} while {doing}; their log "
                           f"({log_path}) ends:\n{_log_tail(log_path)}")
    if time.monotonic() > deadline:
        raise TimeoutError(f"the tensor-parallel ranks did not finish {doing} within {timeout_s()} s "
                           f"({TIMEOUT_ENV}); their log ({log_path}) ends:\n{_log_tail(log_path)}")


def _accept(server: socket.socket, proc: subprocess.Popen, deadline: float, log_path: Path) -> Connection:
    while True:
        try:
            sock, _ = server.accept()
        except socket.timeout:
            _check_alive(proc, deadline, log_path, "starting")
            continue
        sock.setblocking(True)
        return Connection(sock.detach())


def _wait_or_kill(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()


class _PendingCall:
    def __init__(self, method: str) -> None:
        self.method = method
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None

    def set(self, ok: bool, value: Any) -> None:
        self.ok, self.value = ok, value
        self.done.set()


_REMOTE_ERRORS: dict[str, type[Exception]] = {"ValueError": ValueError, "TypeError": TypeError}


class RemoteExecutor:
    """Rank 0 of a job started by `launch_ranks`, as the process that started it sees it: the
    methods of `_core.Executor` that ExecutorClient uses, forwarded over a local socket."""

    is_leader = True

    def __init__(self, proc: subprocess.Popen, conn: Connection, workdir: Path, ready: dict[str, Any]) -> None:
        self.model_info: dict[str, Any] = ready["model_info"]
        self.num_kv_blocks: int = ready["num_kv_blocks"]
        self._proc, self._conn, self._workdir = proc, conn, workdir
        self._log_path = workdir / "ranks.log"
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # the state below
        self._calls: dict[int, _PendingCall] = {}
        self._next_call = 0
        self._in_flight: set[int] = set()
        self._failure: str | None = None
        self._shut_down = False
        self._responses: "queue.Queue[dict]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="trtllm-tp-rank0", daemon=True)
        self._reader.start()

    def enqueue_batch(self, requests: list[dict[str, Any]]) -> list[int]:
        return self._call("enqueue_batch", requests)

    def stats(self) -> dict[str, Any]:
        return self._call("stats")

    def cancel(self, request_id: int) -> None:
        try:
            self._send(("cancel", request_id))
        except RuntimeError:
            pass  # the job is gone; its requests have failed already

    def await_responses(self, timeout_s: float = 0.1) -> list[dict]:
        try:
            out = [self._responses.get(timeout=max(0.0, timeout_s))]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self._responses.get_nowait())
            except queue.Empty:
                return out

    def shutdown(self) -> None:
        """Rank 0 finishes what is in flight as cancelled and broadcasts the shutdown; waits for the job."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        try:
            self._send(("shutdown",))
        except RuntimeError:
            pass
        try:
            self._proc.wait(timeout=timeout_s())
        except subprocess.TimeoutExpired:
            log.warning("the tensor-parallel ranks did not exit within %s s of the shutdown; killing them", timeout_s())
            _wait_or_kill(self._proc, 0)
        self._reader.join(timeout=10)
        self._conn.close()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            if self._failure is not None:
                raise RuntimeError(self._failure)
            try:
                self._conn.send(message)
            except OSError as e:
                raise RuntimeError(f"rank 0 of the tensor-parallel job went away: {e}") from None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = _PendingCall(method)
        with self._lock:
            if self._failure is not None:
                raise RuntimeError(self._failure)
            call_id = self._next_call
            self._next_call += 1
            self._calls[call_id] = call
        self._send(("call", call_id, method, args, kwargs))
        call.done.wait()  # the reader answers every call, or fails them all when rank 0 goes away
        if not call.ok:
            kind, message = call.value
            raise _REMOTE_ERRORS.get(kind, RuntimeError)(message)
        return call.value

    def _read(self) -> None:
        try:
            while True:
                message = self._conn.recv()
                if message[0] == "responses":
                    with self._lock:
                        for response in message[1]:
                            if response["finished"]:
                                self._in_flight.discard(response["request_id"])
                            self._responses.put(response)
                elif message[0] == "reply":
                    _, call_id, ok, value = message
                    with self._lock:
                        call = self._calls.pop(call_id)
                        if ok and call.method == "enqueue_batch":
                            self._in_flight.update(value)  # before any response of them is read
                    call.set(ok, value)
                elif message[0] == "closed":
                    return
        except (EOFError, OSError):
            pass
        code = None
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._fail(f"rank 0 of the tensor-parallel job went away (launcher exit code {code}); the ranks' log "
                   f"ends:\n{_log_tail(self._log_path)}")

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._failure is not None:
                return
            self._failure = reason
            calls, self._calls = self._calls, {}
            in_flight, self._in_flight = self._in_flight, set()
        if not self._shut_down:
            log.error("%s", reason)
        for call in calls.values():
            call.set(False, ("RuntimeError", reason))
        for request_id in in_flight:
            self._responses.put({"request_id": request_id, "tokens": [], "finished": True,
                                 "finish_reason": "cancelled", "error": reason})
