"""trtllm-serve: an OpenAI-compatible HTTP server over one engine dir."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from trtllm_runtime.executor import SCHEDULER_POLICIES, EngineDirError, ExecutorOptions

log = logging.getLogger("trtllm_runtime.serve")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="trtllm-serve",
        description="Serve an engine dir over HTTP with the OpenAI API: /v1/completions, /v1/chat/completions, "
                    "/v1/models, plus /health and /metrics (Prometheus).")
    p.add_argument("engine_dir", type=Path, help="engine dir written by trtllm-build (with tokenizer files for text)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                                                       "0.0.0.0 exposes the server to the network)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default="", help="the model id clients send (default: the engine dir's name)")
    p.add_argument("--max-queue", type=int, default=1024,
                   help="requests in flight (running or waiting) before new ones get 429 (default 1024)")
    p.add_argument("--api-key", default=os.environ.get("TRTLLM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 routes (default: $TRTLLM_API_KEY, else none)")
    p.add_argument("--chat-template", type=Path, help="a jinja chat template file, instead of the engine dir's")
    p.add_argument("--kv-cache-bytes", type=int, default=0, help="KV cache size (default: a share of free memory)")
    p.add_argument("--free-memory-fraction", type=float, default=0.5,
                   help="share of free memory for the KV cache when --kv-cache-bytes is 0 (default 0.5)")
    p.add_argument("--tokens-per-block", type=int, default=32)
    p.add_argument("--max-batch-size", type=int, default=0, help="default: the engine's")
    p.add_argument("--max-num-tokens", type=int, default=0, help="default: the engine's")
    p.add_argument("--scheduler-policy", choices=SCHEDULER_POLICIES, default="max_utilization")
    p.add_argument("--no-prefix-reuse", action="store_true", help="turn off KV cache reuse of shared prefixes")
    p.add_argument("--graceful-timeout-s", type=float, default=30.0,
                   help="on SIGINT/SIGTERM, let in-flight requests finish for this long, then cancel them (default 30)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port must be in [1, 65535], got {args.port}")
    if args.max_queue < 1:
        p.error(f"--max-queue must be >= 1, got {args.max_queue}")
    if args.api_key == "":
        p.error("--api-key must not be empty")
    if args.chat_template is not None and not args.chat_template.is_file():
        p.error(f"--chat-template {args.chat_template} is not a file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="[trtllm-serve] %(levelname)s %(message)s")
    try:
        import uvicorn

        from trtllm_runtime.serve.app import ModelServer, ServerConfig, create_app
    except ImportError as e:
        print(f"trtllm-serve: error: {e.name} is missing; install the server extra: pip install 'trtllm[serve]'",
              file=sys.stderr)
        return 2
    try:
        options = ExecutorOptions(
            tokens_per_block=args.tokens_per_block, kv_cache_bytes=args.kv_cache_bytes,
            free_memory_fraction=args.free_memory_fraction, enable_prefix_reuse=not args.no_prefix_reuse,
            scheduler_policy=args.scheduler_policy, max_batch_size=args.max_batch_size,
            max_num_tokens=args.max_num_tokens)
        config = ServerConfig(args.engine_dir, args.served_model_name, args.max_queue, args.api_key,
                              args.chat_template, options)
        server = ModelServer(config)
    except (ValueError, EngineDirError, OSError) as e:
        print(f"trtllm-serve: error: {e}", file=sys.stderr)
        return 2
    log.info("serving %s as %r on http://%s:%d/v1 (max_seq_len %d, chat template: %s)", args.engine_dir,
             config.model_name, args.host, args.port, server.max_seq_len,
             "yes" if server.chat_template else "none")
    app = create_app(server)
    # uvicorn handles SIGINT/SIGTERM: stop accepting, wait up to the timeout for in-flight
    # requests, cancel the rest, then run the app's shutdown (which closes the executor).
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    timeout_graceful_shutdown=args.graceful_timeout_s, access_log=args.log_level == "debug")
    finally:
        server.close()  # also when uvicorn never started (port taken); a second close does nothing
    return 0


if __name__ == "__main__":
    sys.exit(main())
