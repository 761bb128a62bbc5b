"""Chat-template renders with tools, by transformers' apply_chat_template, for tests/tools.rs.

Needs `pip install transformers jinja2` (no torch) and the real tokenizers (scripts/fetch-tokenizers.sh).
Messages are in OpenAI's shape with arguments as JSON strings; HF's templates want them parsed,
so they are parsed for transformers here (as the engine does). Writes tests/fixtures/tools/renders.json.
"""
import copy
import json
import pathlib

from transformers import PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parent.parent
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a time zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}
CALL2 = {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"zone\": \"Europe/Paris\"}"}}
USER = {"role": "user", "content": "What is the weather in Paris?"}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def hf_messages(messages):
    out = copy.deepcopy(messages)
    for m in out:
        for c in m.get("tool_calls", []):
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    return out


CASES = [
    ("qwen3", [SYSTEM, USER], [WEATHER, TIME]),
    ("qwen3", [USER], [WEATHER]),
    ("qwen3", [USER, {"role": "assistant", "content": "", "tool_calls": [CALL]},
               {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18, \"sky\": \"clear\"}"}], [WEATHER]),
    ("qwen3", [USER, {"role": "assistant", "content": "Let me check.", "tool_calls": [CALL, CALL2]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
               {"role": "tool", "tool_call_id": "call_2", "content": "14:05"}], [WEATHER, TIME]),
    ("llama3_2", [USER], [WEATHER, TIME]),
    ("llama3_2", [SYSTEM, USER], [WEATHER]),
    ("llama3_2", [USER, {"role": "assistant", "content": "", "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18, \"sky\": \"clear\"}"}], [WEATHER]),
    ("llama3_2", [USER, {"role": "assistant", "content": "", "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}], None),
]

out = []
for model, messages, tools in CASES:
    d = ROOT / "models/tokenizers" / model
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    tok = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"), chat_template=cfg["chat_template"],
                                  bos_token=cfg.get("bos_token"), eos_token=cfg.get("eos_token"))
    kwargs = {"date_string": "26 Jul 2024"} if model.startswith("llama") else {}
    expected = tok.apply_chat_template(hf_messages(messages), tools=tools, add_generation_prompt=True,
                                       tokenize=False, **kwargs)
    out.append({"model": model, "messages": messages, "tools": tools, "kwargs": kwargs, "expected": expected})
(ROOT / "tests/fixtures/tools/renders.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
print(f"wrote {len(out)} renders")
