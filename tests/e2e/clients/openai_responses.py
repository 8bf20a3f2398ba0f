"""Drive the controller's Responses API with the official OpenAI Python SDK (as Codex CLI's
requests look), and print what came back as one JSON document for the Rust test to check.
usage: openai_responses.py BASE_URL API_KEY MODEL"""
import json
import sys

from openai import OpenAI

url, key, model = sys.argv[1:4]
client = OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
hints = {"session-id": "codex-sdk"}
out = {}

raw = client.responses.with_raw_response.create(
    model=model, instructions="You are Codex.", input="Say hello.", max_output_tokens=8, extra_headers=hints
)
response = raw.parse()
out["create"] = {"node": raw.headers.get("x-switchyard-node"), "id": response.id, "status": response.status,
                 "text": response.output_text, "output_tokens": response.usage.output_tokens if response.usage else None}

# Raw events (`stream=True`): the SDK's accumulating helper (`responses.stream`) needs
# `content_index` on every delta, which llama-server's events lack (Switchyard relays them
# unchanged).
events, pieces, final = [], [], None
for event in client.responses.create(
    model=model, instructions="You are Codex.", input="Say hello again.", max_output_tokens=8, stream=True,
    extra_headers=hints,
):
    events.append(event.type)
    if event.type == "response.output_text.delta":
        pieces.append(event.delta)
    if event.type == "response.completed":
        final = event.response
out["stream"] = {"first": events[0] if events else None, "last": events[-1] if events else None,
                 "deltas": events.count("response.output_text.delta"), "text": "".join(pieces),
                 "final_text": final.output_text if final else None, "status": final.status if final else None}
print(json.dumps(out))
