"""trtllm-serve through the official `openai` client: completions and chat, streaming and not,
answer what `LLM.generate` answers for the same prompt and seed."""

from __future__ import annotations

import pytest
httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
openai = pytest.importorskip("openai", reason="the serve extra is not installed")
pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("pydantic", reason="the serve extra is not installed")
pytest.importorskip("jinja2", reason="the serve extra is not installed")
import transformers

from serve_helpers import serve
from trtllm_runtime import LLM, SamplingParams

MODEL = "tiny"
MESSAGES = [{"role": "system", "content": "you are a w5"}, {"role": "user", "content": "hello how are you"}]


@pytest.fixture(scope="module")
def server(tiny_text_engine, tmp_path_factory):
    with serve(tiny_text_engine, tmp_path_factory.mktemp("logs"), "--served-model-name", MODEL,
               "--kv-cache-bytes", str(64 << 20)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def llm(tiny_text_engine):
    with LLM(tiny_text_engine, kv_cache_bytes=64 << 20) as reference:
        yield reference


@pytest.fixture(scope="module")
def chat_prompt_ids(tiny_text_engine, llm):
    """The chat prompt as transformers renders it (an independent reference for our template code)."""
    hf = transformers.AutoTokenizer.from_pretrained(str(tiny_text_engine))
    text = hf.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return llm.tokenizer.encode(text, add_special_tokens=False)


def test_models_lists_the_served_model_and_health_is_ok(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}


@pytest.mark.parametrize("temperature, seed", [(0.0, None), (0.9, 7)])
def test_completion_equals_llm_generate(client, llm, temperature, seed):
    ref = llm.generate("hello world", SamplingParams(max_tokens=12, temperature=temperature, seed=seed))[0]
    out = client.completions.create(model=MODEL, prompt="hello world", max_tokens=12, temperature=temperature,
                                    seed=seed)
    assert out.choices[0].text == ref.text
    assert out.choices[0].finish_reason == ref.outputs[0].finish_reason
    assert out.usage.prompt_tokens == len(ref.prompt_token_ids)
    assert out.usage.completion_tokens == len(ref.token_ids)
    assert out.object == "text_completion" and out.model == MODEL


def test_streamed_completion_equals_llm_generate(client, llm):
    ref = llm.generate("the capital of", SamplingParams(max_tokens=16, temperature=0.7, seed=3))[0]
    chunks = list(client.completions.create(model=MODEL, prompt="the capital of", max_tokens=16, temperature=0.7,
                                            seed=3, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == ref.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == ref.outputs[0].finish_reason
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].usage.completion_tokens == len(ref.token_ids)


def test_token_id_prompts_and_batches(client, llm):
    prompts = [[1, 20, 30, 40], [1, 7]]
    refs = llm.generate(prompts, SamplingParams(max_tokens=8, temperature=0))
    out = client.completions.create(model=MODEL, prompt=prompts, max_tokens=8, temperature=0)
    assert [c.index for c in out.choices] == [0, 1]
    assert [c.text for c in out.choices] == [r.text for r in refs]


def test_n_samples_follow_seed_plus_i(client, llm):
    ref = llm.generate("hello", SamplingParams(max_tokens=10, temperature=1.0, seed=11, n=3))[0]
    out = client.completions.create(model=MODEL, prompt="hello", max_tokens=10, temperature=1.0, seed=11, n=3)
    assert [c.text for c in sorted(out.choices, key=lambda c: c.index)] == [o.text for o in ref.outputs]
    streamed = ["", "", ""]
    for chunk in client.completions.create(model=MODEL, prompt="hello", max_tokens=10, temperature=1.0, seed=11,
                                           n=3, stream=True):
        streamed[chunk.choices[0].index] += chunk.choices[0].text
    assert streamed == [o.text for o in ref.outputs]


def test_stop_string_cuts_the_text_streamed_or_not(client, llm):
    full = llm.generate("hello world", SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))[0].text
    words = full.split()
    stop = " ".join(words[3:5])  # two words: the stream must hold back a partial match
    ref = llm.generate("hello world", SamplingParams(max_tokens=20, temperature=0, ignore_eos=True, stop=stop))[0]
    assert stop not in ref.text and full.startswith(ref.text)
    kw = dict(model=MODEL, prompt="hello world", max_tokens=20, temperature=0, stop=[stop],
              extra_body={"ignore_eos": True})
    out = client.completions.create(**kw)
    assert out.choices[0].text == ref.text and out.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True))
    assert streamed == ref.text


def test_completion_logprobs_match_llm(client, llm):
    ref = llm.generate("hello", SamplingParams(max_tokens=6, temperature=0, logprobs=2))[0].outputs[0]
    out = client.completions.create(model=MODEL, prompt="hello", max_tokens=6, temperature=0, logprobs=2)
    lp = out.choices[0].logprobs
    assert lp.tokens == [llm.tokenizer.decode([t], skip_special_tokens=False) for t in ref.token_ids]
    assert lp.token_logprobs == pytest.approx([entry[t] for entry, t in zip(ref.logprobs, ref.token_ids)], abs=1e-5)
    assert all(len(top) >= 2 for top in lp.top_logprobs)


def test_chat_equals_llm_generate_on_the_templated_prompt(client, llm, chat_prompt_ids):
    ref = llm.generate(chat_prompt_ids, SamplingParams(max_tokens=12, temperature=0.8, seed=5))[0]
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0.8, seed=5)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == llm.tokenizer.decode(ref.token_ids)
    assert out.usage.prompt_tokens == len(chat_prompt_ids)
    assert out.object == "chat.completion"


def test_streamed_chat_equals_llm_generate(client, llm, chat_prompt_ids):
    ref = llm.generate(chat_prompt_ids, SamplingParams(max_tokens=12, temperature=0.8, seed=5))[0]
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0.8,
                                                 seed=5, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ref.text
    assert chunks[-1].choices[0].finish_reason == ref.outputs[0].finish_reason
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_chat_logprobs_list_the_top_tokens(client):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True,
                                         top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert entry.token == entry.top_logprobs[0].token  # greedy picks the most likely


def test_chat_default_max_tokens_fills_the_context(client, llm, chat_prompt_ids):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert out.usage.total_tokens == llm.runner.max_seq_len and out.choices[0].finish_reason == "length"


def test_errors_reach_the_client_as_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="hello", max_tokens=10_000)
    assert "max_seq_len" in e.value.message and e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="hello")
