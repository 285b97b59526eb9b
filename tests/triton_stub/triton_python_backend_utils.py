"""A local stand-in for Triton's `triton_python_backend_utils` (the module the Python backend
injects into model.py), for testing examples/triton without a Triton server.

It mirrors the subset of the real API our models use, with the real semantics where they
matter: string tensors are numpy object arrays of bytes; a decoupled model's response sender
accepts no response after the one flagged TRITONSERVER_RESPONSE_COMPLETE_FINAL and no empty
send without that flag; requests can be cancelled by the client (`is_cancelled`); errors are
TritonError objects carried by responses. The server side (config.pbtxt parsing, tensor
checks, ensemble scheduling) is in tests/triton_server_standin.py.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1

_log = logging.getLogger("triton_python_backend_utils")

_TYPES = {"TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16, "TYPE_UINT32": np.uint32,
          "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8, "TYPE_INT16": np.int16, "TYPE_INT32": np.int32,
          "TYPE_INT64": np.int64, "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
          "TYPE_STRING": np.object_}


def triton_string_to_numpy(triton_type: str) -> type:
    return _TYPES[triton_type]


class TritonModelException(Exception):
    """Raised by a model (e.g. in initialize) or by the backend on misuse."""


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        if not isinstance(array, np.ndarray):
            raise TritonModelException(f"tensor {name}: expected a numpy array, got {type(array).__name__}")
        if array.dtype.kind in "UO" and array.dtype != np.object_:
            raise TritonModelException(f"tensor {name}: strings must be a numpy object array of bytes")
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self._outputs = list(output_tensors or [])
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class ResponseSender:
    """Decoupled responses of one request. `on_send(response, flags)` is the server side."""

    def __init__(self, on_send: Callable[[InferenceResponse | None, int], None]) -> None:
        self._on_send = on_send
        self._closed = False
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        with self._lock:
            if self._closed:
                raise TritonModelException("Unable to send response. Response sender has been closed.")
            if response is None and flags != TRITONSERVER_RESPONSE_COMPLETE_FINAL:
                raise TritonModelException("a response sender needs a response unless the final flag is set")
            if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
                self._closed = True
        self._on_send(response, flags)

    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:  # the server side: the client cancelled the request
        self._cancelled.set()


class InferenceRequest:
    def __init__(self, model_name: str = "", inputs: list[Tensor] | None = None,
                 requested_output_names: list[str] | None = None, request_id: str = "",
                 response_sender: ResponseSender | None = None) -> None:
        self._model_name, self._inputs = model_name, list(inputs or [])
        self._requested = list(requested_output_names or [])
        self._request_id, self._sender = request_id, response_sender

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._request_id

    def requested_output_names(self) -> list[str]:
        return self._requested

    def get_response_sender(self) -> ResponseSender:
        if self._sender is None:
            raise TritonModelException("only requests to a decoupled model have a response sender")
        return self._sender

    def is_cancelled(self) -> bool:
        return self._sender is not None and self._sender.is_cancelled()


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((i for i in model_config.get("input", []) if i["name"] == name), None)


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((o for o in model_config.get("output", []) if o["name"] == name), None)


class Logger:
    @staticmethod
    def log_info(message: str) -> None:
        _log.info(message)

    @staticmethod
    def log_warn(message: str) -> None:
        _log.warning(message)

    @staticmethod
    def log_error(message: str) -> None:
        _log.error(message)

    @staticmethod
    def log_verbose(message: str) -> None:
        _log.debug(message)
