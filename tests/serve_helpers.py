"""Running `trtllm-serve` in a subprocess for the server tests, and reading its /metrics."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path) -> None:
        self.proc, self.port, self.log_path = proc, port, log_path
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def metrics(self) -> dict[str, float]:
        """Unlabelled view of /metrics: metric name (with its labels dropped) -> value."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name_labels, value = line.rsplit(" ", 1)
            name = name_labels.split("{", 1)[0]
            if "_bucket" not in name:
                out[name] = out.get(name, 0.0) + float(value)
        return out

    def wait_for_metrics(self, timeout_s: float = 20.0, **expected: float) -> dict[str, float]:
        """Polls /metrics until every named metric has its expected value."""
        deadline = time.monotonic() + timeout_s
        while True:
            m = self.metrics()
            if all(m.get(k) == v for k, v in expected.items()):
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"metrics never reached {expected}: {({k: m.get(k) for k in expected})}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, as a process manager would; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)


@contextlib.contextmanager
def serve(engine_dir: Path, log_dir: Path, *args: str, startup_timeout_s: float = 120.0) -> Iterator[Server]:
    """`python -m trtllm_runtime.cli.serve ENGINE --port P ARGS...`, ready when /health answers."""
    port = free_port()
    log_path = log_dir / f"server_{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "trtllm_runtime.cli.serve", str(engine_dir), "--port", str(port),
                                 "--log-level", "warning", *args],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Server(proc, port, log_path)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"trtllm-serve exited with {proc.returncode}:\n{server.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"trtllm-serve did not start within {startup_timeout_s} s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
