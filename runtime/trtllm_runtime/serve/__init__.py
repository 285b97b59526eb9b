"""The OpenAI-compatible server behind `trtllm-serve` (needs the `serve` extra: starlette, uvicorn)."""

from trtllm_runtime.serve.app import ModelServer, ServerConfig, create_app

__all__ = ["ModelServer", "ServerConfig", "create_app"]
