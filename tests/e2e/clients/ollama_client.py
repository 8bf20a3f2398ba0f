"""Drive the controller with the official `ollama` Python client, as a user would, and
print what came back as one JSON document for the Rust test to check.
usage: ollama_client.py BASE_URL API_KEY MODEL TASK [TRANSLATED_TASK]
TRANSLATED_TASK routes to a node whose runtime speaks OpenAI's API (the controller
translates): tools, and `format` with a JSON schema, are checked there."""
import json
import sys

import ollama

url, key, model, task = sys.argv[1:5]
client = ollama.Client(host=url, headers={"Authorization": f"Bearer {key}", "x-switchyard-task": task})
out = {}

r = client.chat(model=model, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 8}, stream=False)
out["chat"] = {"content": r.message.content, "done": r.done, "done_reason": r.done_reason, "eval_count": r.eval_count}

parts = list(client.chat(model=model, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 8}, stream=True))
out["chat_stream"] = {
    "parts": len(parts),
    "last_done": parts[-1].done,
    "eval_count": parts[-1].eval_count,
    "text": "".join(p.message.content for p in parts),
}

g = client.generate(model=model, prompt="Once upon", options={"num_predict": 6})
out["generate"] = {"response": g.response, "done": g.done, "eval_count": g.eval_count}

out["tags"] = [m.model for m in client.list().models]
out["ps"] = [m.model for m in client.ps().models]
out["embed"] = len(client.embed(model=model, input=["a", "b"]).embeddings)

try:
    client.chat(model="nope", messages=[{"role": "user", "content": "x"}], stream=False)
except ollama.ResponseError as err:
    out["unknown_model"] = {"status": err.status_code, "error": err.error}

# A picture (a 1x1 PNG), tools and a JSON schema: accepted as the client sends them.
png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
r = client.chat(model=model, messages=[{"role": "user", "content": "what is this?", "images": [png]}],
                tools=[weather], format=schema, options={"num_predict": 4}, stream=False)
out["images_tools_format"] = {"done": r.done}

if len(sys.argv) > 5:
    translated = ollama.Client(host=url, headers={"Authorization": f"Bearer {key}", "x-switchyard-task": sys.argv[5]})
    r = translated.chat(model=model, messages=[{"role": "user", "content": "json"}], format=schema,
                        options={"temperature": 0, "num_predict": 48}, stream=False)
    out["schema"] = {"content": r.message.content, "done": r.done}
    r = translated.chat(model=model, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[weather],
                        options={"temperature": 0, "num_predict": 24}, stream=False)
    out["tools"] = {
        "calls": [c.function.name for c in (r.message.tool_calls or [])],
        "content": r.message.content,
        "done": r.done,
    }

print(json.dumps(out))
