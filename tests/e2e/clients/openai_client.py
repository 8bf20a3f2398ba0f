"""Drive the controller with the official OpenAI Python SDK, as a user would, and print
what came back as one JSON document for the Rust test to check.
usage: openai_client.py BASE_URL API_KEY MODEL TASK"""
import json
import sys

import openai
from openai import OpenAI

url, key, model, task = sys.argv[1:5]
client = OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
hints = {"x-switchyard-task": task}
out = {"models": [m.id for m in client.models.list().data]}

raw = client.chat.completions.with_raw_response.create(
    model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=8, extra_headers=hints
)
chat = raw.parse()
out["headers"] = {k: raw.headers.get(k) for k in ("x-switchyard-node", "x-switchyard-policy", "x-switchyard-reason")}
out["chat"] = {
    "content": chat.choices[0].message.content,
    "finish": chat.choices[0].finish_reason,
    "completion_tokens": chat.usage.completion_tokens,
}

pieces, finish = [], None
for chunk in client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=12, stream=True, extra_headers=hints
):
    if chunk.choices:
        if chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
out["stream"] = {"chunks": len(pieces), "text": "".join(pieces), "finish": finish}

completion = client.completions.create(model=model, prompt="Once upon", max_tokens=5, extra_headers=hints)
out["completion"] = {"text": completion.choices[0].text, "finish": completion.choices[0].finish_reason}

# Tools and JSON mode pass through to the runtime (llama.cpp with a tool-calling chat format).
weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
called = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[weather],
    tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=24, temperature=0,
    extra_headers=hints,
)
calls = called.choices[0].message.tool_calls or []
out["tool_call"] = {"finish": called.choices[0].finish_reason, "names": [c.function.name for c in calls]}
as_json = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "json please"}], response_format={"type": "json_object"},
    max_tokens=12, temperature=0, extra_headers=hints,
)
out["json_mode"] = {"content": as_json.choices[0].message.content}

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as e:
    out["unknown_model"] = {"status": e.status_code, "message": e.message}

try:
    OpenAI(base_url=url + "/v1", api_key="wrong-key", max_retries=0).models.list()
except openai.AuthenticationError as e:
    out["bad_key"] = {"status": e.status_code}

print(json.dumps(out))
