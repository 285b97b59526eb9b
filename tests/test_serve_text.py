"""The server's text handling on its own: chat templates render as transformers renders them,
and streamed text never shows what the final text takes back."""

from __future__ import annotations

import json

import pytest
pytest.importorskip("pydantic", reason="the serve extra is not installed")
pytest.importorskip("jinja2", reason="the serve extra is not installed")
import transformers

from tiny_tokenizer import make_tokenizer
from trtllm_runtime.serve.chat_template import ChatTemplate, ChatTemplateError, find_chat_template
from trtllm_runtime.serve.generation import stream_delta

# Shapes of templates found in the wild: ChatML with a default system prompt (SmolLM2), Llama 3
# (bos_token, loop controls, strip), and one that raises on a bad conversation (Mistral-like).
TEMPLATES = {
    "chatml_default_system": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'tool' %}{% continue %}{% endif %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim "
        "+ '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "alternating": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"),
}
CONVERSATION = [{"role": "user", "content": "hello  "}, {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "what is the capital of france"}]


@pytest.fixture(params=sorted(TEMPLATES))
def tokenizer_dir(request, tmp_path):
    make_tokenizer().save(str(tmp_path / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
              "eos_token": {"__type": "AddedToken", "content": "</s>", "special": True},  # the serialized form
              "chat_template": TEMPLATES[request.param]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_renders_as_transformers(tokenizer_dir, add_generation_prompt):
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    ours = ChatTemplate(find_chat_template(tokenizer_dir, config), config)
    hf = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    expected = hf.apply_chat_template(CONVERSATION, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert ours.render(CONVERSATION, add_generation_prompt) == expected


def test_chat_template_jinja_file_wins_over_tokenizer_config(tmp_path):
    (tmp_path / "chat_template.jinja").write_text("file")
    assert find_chat_template(tmp_path, {"chat_template": "config"}) == "file"
    assert find_chat_template(tmp_path / "none", {"chat_template": [{"name": "default", "template": "d"}]}) == "d"
    assert find_chat_template(tmp_path / "none", {}) is None


def test_template_errors_are_chat_template_errors():
    template = ChatTemplate(TEMPLATES["alternating"], {"bos_token": "<s>", "eos_token": "</s>"})
    with pytest.raises(ChatTemplateError, match="must alternate"):
        template.render([{"role": "assistant", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for %}", {})


@pytest.mark.parametrize("text, sent, finished, stops, delta", [
    ("hello wor", 0, False, None, "hello wor"),
    ("hello wor", 0, False, ["world"], "hello "),      # "wor" may begin the stop string
    ("hello wor", 0, True, ["world"], "hello wor"),    # finished: nothing more can match
    ("hello w", 6, False, ["xyz"], "w"),
    ("caf\ufffd", 0, False, None, "caf"),              # an incomplete UTF-8 character waits
    ("ab", 2, False, ["b c"], ""),
])
def test_stream_delta_holds_back_what_may_change(text, sent, finished, stops, delta):
    assert stream_delta(text, sent, finished, stops) == delta
