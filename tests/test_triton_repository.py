"""examples/triton/model_repository, run against the local Triton stand-in (no Triton server
here): layout and config, the decoupled tensorrt_llm model (streaming, in-flight batching,
cancellation, errors), and the text-in/text-out ensemble."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from triton_server_standin import Ensemble, LoadedModel, outputs_of, parse_config, pb_utils
from trtllm_runtime import LLM, SamplingParams

REPOSITORY = Path(__file__).resolve().parents[1] / "examples" / "triton" / "model_repository"
MODELS = ("preprocessing", "tensorrt_llm", "postprocessing")
ENGINE_PLACEHOLDER = "/engines/smollm2"
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


@pytest.fixture(scope="module")
def repository(tiny_text_engine, tmp_path_factory) -> Path:
    """The example repository with the engine path pointed at the tiny engine, as a user edits it."""
    repo = tmp_path_factory.mktemp("triton") / "model_repository"
    shutil.copytree(REPOSITORY, repo)
    for config in repo.glob("*/config.pbtxt"):
        config.write_text(config.read_text().replace(ENGINE_PLACEHOLDER, str(tiny_text_engine)))
    return repo


@pytest.fixture(scope="module")
def models(repository):
    loaded = {name: LoadedModel(repository, name) for name in MODELS}
    yield loaded
    for model in loaded.values():
        model.finalize()


@pytest.fixture(scope="module")
def llm(tiny_text_engine):
    with LLM(tiny_text_engine) as reference:
        yield reference


def _ids_request(prompt: list[int], output_len: int, **extra) -> dict[str, np.ndarray]:
    tensors = {"input_ids": np.asarray([prompt], np.int32), "input_lengths": np.asarray([[len(prompt)]], np.int32),
               "request_output_len": np.asarray([[output_len]], np.int32)}
    for name, value in extra.items():
        dtype = {bool: np.bool_, float: np.float32, int: np.int32}[type(value)]
        tensors[name] = np.asarray([[value]], np.uint64 if name == "random_seed" else dtype)
    return tensors


def _tokens(responses) -> list[list[int]]:
    return [outputs_of(r)["output_ids"][0, 0].tolist() for r in responses]


def test_repository_has_the_tensorrt_llm_layout():
    assert sorted(p.name for p in REPOSITORY.iterdir()) == ["ensemble", "postprocessing", "preprocessing",
                                                            "tensorrt_llm"]
    for name in MODELS:
        assert (REPOSITORY / name / "1" / "model.py").is_file()
    assert (REPOSITORY / "ensemble" / "1").is_dir()  # Triton wants a version dir, even an empty one
    config = parse_config(REPOSITORY / "tensorrt_llm" / "config.pbtxt")
    assert config["backend"] == "python" and config["max_batch_size"] > 0
    assert config["model_transaction_policy"]["decoupled"] is True
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["batch_scheduler_policy"] in ("max_utilization", "guaranteed_no_evict")
    assert 0 < float(params["kv_cache_free_gpu_mem_fraction"]) <= 1
    assert params["gpt_model_path"] == ENGINE_PLACEHOLDER


def test_ensemble_wiring_names_existing_tensors_of_matching_types():
    ensemble = parse_config(REPOSITORY / "ensemble" / "config.pbtxt")
    assert ensemble["platform"] == "ensemble"
    available = {i["name"]: i["data_type"] for i in ensemble["input"]}
    for step in ensemble["ensemble_scheduling"]["step"]:
        config = parse_config(REPOSITORY / step["model_name"] / "config.pbtxt")
        inputs = {i["name"]: i for i in config["input"]}
        outputs = {o["name"]: o["data_type"] for o in config["output"]}
        for key, value in step["input_map"].items():
            assert key in inputs, f"{step['model_name']} has no input {key}"
            assert available[value] == inputs[key]["data_type"], (step["model_name"], key)
        required = {n for n, i in inputs.items() if not i.get("optional", False)}
        assert required <= set(step["input_map"]), f"{step['model_name']} misses {required - set(step['input_map'])}"
        for key, value in step["output_map"].items():
            available[value] = outputs[key]
    for output in ensemble["output"]:
        assert available[output["name"]] == output["data_type"]


def test_non_streaming_request_gets_one_final_response_equal_to_the_runtime(models, llm):
    prompt = [1, 20, 21, 22]
    responses, _ = models["tensorrt_llm"].submit(_ids_request(prompt, 12))
    got = responses.wait()
    assert len(got) == 1 and responses.items[-1][1] == FINAL
    ref = llm.runner.generate([prompt], max_new_tokens=12)[0]
    assert _tokens(got) == [ref]
    assert outputs_of(got[0])["sequence_length"].tolist() == [[len(ref)]]


def test_streaming_sends_each_step_then_the_final_flag(models, llm):
    prompt = [1, 30, 31]
    responses, _ = models["tensorrt_llm"].submit(_ids_request(prompt, 10, streaming=True, return_log_probs=True))
    got = responses.wait()
    ref = llm.runner.generate([prompt], max_new_tokens=10, return_dict=True, num_logprobs=0)
    assert sum(_tokens(got), []) == ref["output_ids"][0]
    assert len(got) == len(ref["output_ids"][0])  # one response per generated token
    assert responses.items[-1][1] == FINAL and all(flags == 0 for _, flags in responses.items[:-1])
    logprobs = np.concatenate([outputs_of(r)["output_log_probs"][0, 0] for r in got])
    np.testing.assert_allclose(logprobs, ref["logprobs"][0], atol=1e-5)
    cumulative = [outputs_of(r)["cum_log_probs"][0, 0] for r in got]
    np.testing.assert_allclose(cumulative, np.cumsum(ref["logprobs"][0]), atol=1e-4)


def test_seeded_sampling_matches_the_runtime(models, llm):
    prompt = [1, 40, 41]
    got = models["tensorrt_llm"].infer(_ids_request(prompt, 12, temperature=0.9, runtime_top_p=0.95, random_seed=5))
    ref = llm.runner.generate([prompt], max_new_tokens=12, temperature=0.9, top_p=0.95, random_seed=5)
    assert _tokens(got) == ref


def test_concurrent_requests_batch_in_flight_and_match_running_alone(models, llm):
    rng = np.random.default_rng(1)
    prompts = [[1] + rng.integers(5, 128, int(rng.integers(2, 20))).tolist() for _ in range(12)]
    client = models["tensorrt_llm"].instance.runner.client
    before = client.stats()
    pending = [models["tensorrt_llm"].submit(_ids_request(p, 16, streaming=i % 2 == 0))[0]
               for i, p in enumerate(prompts)]
    results = [sum(_tokens(r.wait()), []) for r in pending]
    after = client.stats()
    refs = [llm.runner.generate([p], max_new_tokens=16)[0] for p in prompts]
    assert results == refs
    tokens = after["generated_tokens"] - before["generated_tokens"]
    assert after["iterations"] - before["iterations"] < tokens  # steps served several requests at once


def test_client_cancellation_stops_generation_and_frees_the_kv_blocks(models):
    client = models["tensorrt_llm"].instance.runner.client
    responses, sender = models["tensorrt_llm"].submit(_ids_request([1, 5, 6], 200, streaming=True))
    deadline = time.monotonic() + 30
    while not responses.items and time.monotonic() < deadline:
        time.sleep(0.001)
    sender.cancel()
    got = responses.wait()
    assert len(got) < 200 and responses.items[-1] == (None, FINAL)
    deadline = time.monotonic() + 10
    while client.stats()["kv_blocks_used"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.stats()["kv_blocks_used"] == 0


@pytest.mark.parametrize("tensors, message", [
    (_ids_request([1, 2], 8, beam_width=2), "beam_width"),
    (_ids_request([1, 2], 100_000), "max_seq_len"),
    (_ids_request([1, 500], 4), "outside the vocabulary"),
    ({**_ids_request([1, 2, 3], 4), "input_lengths": np.asarray([[7]], np.int32)}, "input_lengths"),
    ({**_ids_request([1, 2], 4), "input_ids": np.asarray([[1, 2], [3, 4]], np.int32),
      "input_lengths": np.asarray([[2], [2]], np.int32), "request_output_len": np.asarray([[4], [4]], np.int32)},
     "one prompt per request"),
])
def test_bad_requests_get_an_error_response_and_the_model_goes_on(models, tensors, message):
    responses, _ = models["tensorrt_llm"].submit(tensors)
    got = responses.wait()
    assert len(got) == 1 and got[0].has_error() and message in got[0].error().message()
    assert responses.items[-1][1] == FINAL
    assert len(_tokens(models["tensorrt_llm"].infer(_ids_request([1, 2], 3)))[0]) > 0


@pytest.mark.parametrize("edit, message", [
    (("decoupled: true", "decoupled: false"), "decoupled"),
    (('"inflight_fused_batching"', '"V1"'), "gpt_model_type"),
    ((ENGINE_PLACEHOLDER, "${engine_dir}"), "not set"),
    ((ENGINE_PLACEHOLDER, "/nonexistent/engine"), "does not exist"),
])
def test_initialize_rejects_a_bad_config_clearly(tmp_path, edit, message):
    repo = tmp_path / "repo"
    shutil.copytree(REPOSITORY / "tensorrt_llm", repo / "tensorrt_llm")
    config = repo / "tensorrt_llm" / "config.pbtxt"
    config.write_text(config.read_text().replace(*edit))
    with pytest.raises(pb_utils.TritonModelException, match=message):
        LoadedModel(repo, "tensorrt_llm")


@pytest.mark.parametrize("name", ["preprocessing", "postprocessing"])
@pytest.mark.parametrize("edit, message", [
    ((ENGINE_PLACEHOLDER, "${engine_dir}"), "parameter tokenizer_dir is not set"),
    ((ENGINE_PLACEHOLDER, "/nonexistent/engine"), "tokenizer.json"),
    (('string_value: "true"', 'string_value: "maybe"'), "must be true or false, got 'maybe'"),
])
def test_tokenizer_models_reject_a_bad_config_clearly(tiny_text_engine, tmp_path, name, edit, message):
    repo = tmp_path / "repo"
    shutil.copytree(REPOSITORY / name, repo / name)
    config = repo / name / "config.pbtxt"
    assert edit[0] in config.read_text()
    text = config.read_text().replace(*edit)
    config.write_text(text.replace(ENGINE_PLACEHOLDER, str(tiny_text_engine)))  # all else as a user set it
    with pytest.raises(pb_utils.TritonModelException, match=message):
        LoadedModel(repo, name)


def _text_request(text: str, max_tokens: int, **extra) -> dict[str, np.ndarray]:
    tensors = {"text_input": np.asarray([[text.encode()]], np.object_),
               "max_tokens": np.asarray([[max_tokens]], np.int32)}
    for name, value in extra.items():
        if name == "stop_words":
            tensors[name] = np.asarray([[w.encode() for w in value]], np.object_)
        else:
            tensors[name] = np.asarray([[value]], {bool: np.bool_, float: np.float32, int: np.int32}[type(value)])
    return tensors


def test_ensemble_turns_text_into_the_llm_api_text(repository, models, llm):
    ensemble = Ensemble(parse_config(repository / "ensemble" / "config.pbtxt"), models)
    [out] = ensemble.infer(_text_request("hello world", 12))
    ref = llm.generate("hello world", SamplingParams(max_tokens=12, temperature=0))[0]
    assert out["text_output"].tolist() == [[ref.text.encode()]]


def test_streaming_ensemble_sends_each_tokens_text(repository, models, llm):
    ensemble = Ensemble(parse_config(repository / "ensemble" / "config.pbtxt"), models)
    outs = ensemble.infer(_text_request("hello world", 8, stream=True))
    ref = llm.generate("hello world", SamplingParams(max_tokens=8, temperature=0))[0]
    # Each response's new tokens are decoded on their own (TensorRT-LLM's postprocessing does the same).
    assert [o["text_output"][0, 0].decode() for o in outs] == [llm.tokenizer.decode([t]) for t in ref.token_ids]


def test_ensemble_stop_words_end_generation(repository, models, llm):
    ensemble = Ensemble(parse_config(repository / "ensemble" / "config.pbtxt"), models)
    full = llm.generate("hello world", SamplingParams(max_tokens=16, temperature=0, ignore_eos=True))[0]
    words = full.text.split()
    stop = words[4]
    [out] = ensemble.infer(_text_request("hello world", 16, stop_words=[stop]))
    text = out["text_output"][0, 0].decode()
    assert text.split() == words[:words.index(stop) + 1]  # as TensorRT-LLM: the stop word is kept


def test_triton_stub_sender_refuses_responses_after_the_final_flag():
    sender = pb_utils.ResponseSender(lambda response, flags: None)
    sender.send(pb_utils.InferenceResponse([]), flags=0)
    with pytest.raises(pb_utils.TritonModelException):
        sender.send(flags=0)
    sender.send(flags=FINAL)
    with pytest.raises(pb_utils.TritonModelException, match="closed"):
        sender.send(pb_utils.InferenceResponse([]))
