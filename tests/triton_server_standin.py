"""The server side of a Triton stand-in, enough to run examples/triton/model_repository in CI:
parse config.pbtxt (protobuf text format) into the JSON Triton hands to `initialize`, load
each Python-backend model.py with `triton_python_backend_utils` (tests/triton_stub) importable,
check request and response tensors against the config (names, dtypes, batch dim, fixed dims),
collect a decoupled model's responses up to the final flag, and run an ensemble's steps by
their input_map / output_map, forwarding each response of a decoupled step downstream.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent / "triton_stub"))
import triton_python_backend_utils as pb_utils  # noqa: E402

# ---- config.pbtxt ----------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"#]+))')
_REPEATED = {"input", "output", "instance_group", "step", "dims", "preferred_batch_size"}
_MAPS = {"parameters", "input_map", "output_map"}


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip():
                raise ValueError(f"config.pbtxt: cannot parse at {text[pos:pos + 30]!r}")
            break
        pos = m.end()
        if not m.group(1):
            out.append(m.group(2) or m.group(3) or m.group(4))
    return out


def _scalar(token: str) -> Any:
    if token.startswith('"'):
        return json.loads(token)
    if token in ("true", "false"):
        return token == "true"
    try:
        return int(token)
    except ValueError:
        try:
            return float(token)
        except ValueError:
            return token  # an enum such as TYPE_INT32 or KIND_CPU


def _message(tokens: list[str], i: int, end: str | None) -> tuple[dict[str, list[Any]], int]:
    fields: dict[str, list[Any]] = {}
    while i < len(tokens) and tokens[i] != end:
        name = tokens[i]
        i += 1
        if tokens[i] == ":":
            i += 1
        value, i = _value(tokens, i)
        fields.setdefault(name, []).extend(value if isinstance(value, list) else [value])
    return fields, i + 1


def _value(tokens: list[str], i: int) -> tuple[Any, int]:
    if tokens[i] == "{":
        return _message(tokens, i + 1, "}")
    if tokens[i] == "[":
        items, i = [], i + 1
        while tokens[i] != "]":
            item, i = _value(tokens, i)
            items.append(item)
            if tokens[i] == ",":
                i += 1
        return items, i + 1
    return _scalar(tokens[i]), i + 1


def _normalize(fields: dict[str, list[Any]]) -> dict[str, Any]:
    """Raw fields -> the JSON shape of Triton's ModelConfig (repeated fields as lists, maps as dicts)."""
    out: dict[str, Any] = {}
    for name, values in fields.items():
        values = [_normalize(v) if isinstance(v, dict) else v for v in values]
        if name in _MAPS:
            out[name] = {v["key"]: v["value"] for v in values}
        elif name in _REPEATED:
            out[name] = values
        elif len(values) == 1:
            out[name] = values[0]
        else:
            raise ValueError(f"config.pbtxt: field {name} is given {len(values)} times")
    return out


def parse_config(path: Path) -> dict[str, Any]:
    fields, _ = _message(_tokens(path.read_text()), 0, None)
    return _normalize(fields)


# ---- tensors against the config --------------------------------------------------------------------

def check_tensor(model: str, array: np.ndarray, spec: dict[str, Any], batched: bool) -> None:
    name = spec["name"]
    expected = pb_utils.triton_string_to_numpy(spec["data_type"])
    if array.dtype != np.dtype(expected):
        raise AssertionError(f"{model}.{name}: dtype {array.dtype}, config says {spec['data_type']}")
    dims = list(spec["dims"])
    shape = list(array.shape[1:] if batched else array.shape)
    if len(shape) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, shape)):
        raise AssertionError(f"{model}.{name}: shape {array.shape}, config says dims {dims}"
                             f"{' after the batch dim' if batched else ''}")
    if spec["data_type"] == "TYPE_STRING" and not all(isinstance(s, bytes) for s in array.reshape(-1)):
        raise AssertionError(f"{model}.{name}: TYPE_STRING elements must be bytes")


class Responses:
    """What one request got: (response, flags) pairs, complete once the final flag arrives."""

    def __init__(self) -> None:
        self.items: list[tuple[pb_utils.InferenceResponse | None, int]] = []
        self.done = threading.Event()

    def add(self, response: pb_utils.InferenceResponse | None, flags: int) -> None:
        self.items.append((response, flags))
        if flags & pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.done.set()

    def wait(self, timeout_s: float = 60.0) -> list[pb_utils.InferenceResponse]:
        if not self.done.wait(timeout_s):
            raise AssertionError(f"no final flag within {timeout_s} s; got {len(self.items)} responses")
        return [r for r, _ in self.items if r is not None]


class LoadedModel:
    def __init__(self, repository: Path, name: str) -> None:
        self.name = name
        self.config = parse_config(repository / name / "config.pbtxt")
        assert self.config["name"] == name, f"{name}/config.pbtxt names the model {self.config['name']!r}"
        self.batched = self.config.get("max_batch_size", 0) > 0
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(self.config)
        self.instance: Any = None
        self._execute_lock = threading.Lock()  # Triton runs one execute at a time per instance
        if self.config.get("platform") == "ensemble":
            return
        assert self.config.get("backend") == "python", f"{name}: only Python-backend models run here"
        path = repository / name / "1" / "model.py"
        spec = importlib.util.spec_from_file_location(f"triton_model_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.instance = module.TritonPythonModel()
        self.instance.initialize({"model_config": json.dumps(self.config), "model_instance_kind": "CPU",
                                  "model_instance_name": f"{name}_0", "model_repository": str(repository / name),
                                  "model_version": "1", "model_name": name})

    def inputs(self) -> dict[str, dict[str, Any]]:
        return {i["name"]: i for i in self.config["input"]}

    def outputs(self) -> dict[str, dict[str, Any]]:
        return {o["name"]: o for o in self.config["output"]}

    def submit(self, tensors: dict[str, np.ndarray]) -> tuple[Responses, pb_utils.ResponseSender | None]:
        """Hand one request to execute(); returns its responses (filling in as they come) and,
        for a decoupled model, its sender (whose `cancel()` is the client cancelling)."""
        specs = self.inputs()
        for name, array in tensors.items():
            assert name in specs, f"{self.name} has no input {name}"
            check_tensor(self.name, array, specs[name], self.batched)
        missing = [n for n, s in specs.items() if not s.get("optional", False) and n not in tensors]
        assert not missing, f"{self.name}: required inputs {missing} not given"
        responses = Responses()
        outputs = self.outputs()

        def on_send(response: pb_utils.InferenceResponse | None, flags: int) -> None:
            if response is not None and not response.has_error():
                for t in response.output_tensors():
                    assert t.name() in outputs, f"{self.name} sent an undeclared output {t.name()}"
                    check_tensor(self.name, t.as_numpy(), outputs[t.name()], self.batched)
            responses.add(response, flags)

        sender = pb_utils.ResponseSender(on_send) if self.decoupled else None
        request = pb_utils.InferenceRequest(self.name, [pb_utils.Tensor(n, a) for n, a in tensors.items()],
                                            list(outputs), response_sender=sender)
        with self._execute_lock:
            returned = self.instance.execute([request])
        if self.decoupled:
            assert returned is None, f"{self.name} is decoupled: execute must return None"
        else:
            assert len(returned) == 1, f"{self.name}: execute returned {len(returned)} responses for 1 request"
            on_send(returned[0], pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return responses, sender

    def infer(self, tensors: dict[str, np.ndarray], timeout_s: float = 60.0) -> list[pb_utils.InferenceResponse]:
        return self.submit(tensors)[0].wait(timeout_s)

    def finalize(self) -> None:
        if self.instance is not None and hasattr(self.instance, "finalize"):
            self.instance.finalize()


def outputs_of(response: pb_utils.InferenceResponse) -> dict[str, np.ndarray]:
    if response.has_error():
        raise AssertionError(f"error response: {response.error().message()}")
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


class Ensemble:
    """Runs an ensemble's steps as Triton schedules them: a step runs once its inputs exist; each
    response of a decoupled step runs the steps after it and becomes one ensemble response."""

    def __init__(self, config: dict[str, Any], models: dict[str, LoadedModel]) -> None:
        self.config, self.models = config, models
        self.steps = config["ensemble_scheduling"]["step"]

    def infer(self, tensors: dict[str, np.ndarray], timeout_s: float = 60.0) -> list[dict[str, np.ndarray]]:
        declared = {i["name"]: i for i in self.config["input"]}
        for name, array in tensors.items():
            check_tensor("ensemble", array, declared[name], True)
        return self._run(0, dict(tensors), timeout_s)

    def _run(self, first: int, pool: dict[str, np.ndarray], timeout_s: float) -> list[dict[str, np.ndarray]]:
        for index in range(first, len(self.steps)):
            step = self.steps[index]
            model = self.models[step["model_name"]]
            # An optional ensemble input the client left out is left out of the step too.
            inputs = {key: pool[value] for key, value in step["input_map"].items() if value in pool}
            responses = model.infer(inputs, timeout_s)
            if model.decoupled:
                out = []
                for response in responses:
                    branch = dict(pool)
                    branch.update({step["output_map"][k]: v for k, v in outputs_of(response).items()
                                   if k in step["output_map"]})
                    out += self._run(index + 1, branch, timeout_s)
                return out
            pool.update({step["output_map"][k]: v for k, v in outputs_of(responses[0]).items()
                         if k in step["output_map"]})
        wanted = [o["name"] for o in self.config["output"]]
        missing = [n for n in wanted if n not in pool]
        assert not missing, f"ensemble outputs {missing} were never produced"
        return [{n: pool[n] for n in wanted}]
