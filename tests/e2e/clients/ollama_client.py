"""Drive the controller with the official `ollama` Python client, as a user would, and
print what came back as one JSON document for the Rust test to check.
usage: ollama_client.py BASE_URL API_KEY MODEL TASK"""
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

print(json.dumps(out))
