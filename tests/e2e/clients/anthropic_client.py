"""Drive the controller with the official Anthropic Python SDK, as Claude Code's own client
library would, and print what came back as one JSON document for the Rust test to check.
usage: anthropic_client.py BASE_URL API_KEY MODEL [tools]
The key goes as `x-api-key` (the SDK's way); `tools` also asks for a forced tool call."""
import json
import sys

import anthropic

url, key, model = sys.argv[1:4]
with_tools = "tools" in sys.argv[4:]
client = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=60)
hints = {"x-switchyard-task": "development", "x-claude-code-session-id": "sdk-session"}
system = "You are a careful coding agent."
question = [{"role": "user", "content": "Say hello."}]
out = {}

raw = client.messages.with_raw_response.create(
    model=model, max_tokens=8, system=system, messages=question, extra_headers=hints
)
message = raw.parse()
out["create"] = {
    "node": raw.headers.get("x-switchyard-node"),
    "type": message.type,
    "role": message.role,
    "blocks": [block.type for block in message.content],
    "text": "".join(block.text for block in message.content if block.type == "text"),
    "stop_reason": message.stop_reason,
    "input_tokens": message.usage.input_tokens,
    "output_tokens": message.usage.output_tokens,
    "cache_read_input_tokens": message.usage.cache_read_input_tokens,
}

events, pieces = [], []
with client.messages.stream(
    model=model, max_tokens=12, system=system, messages=question, extra_headers=hints
) as stream:
    for event in stream:
        events.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            pieces.append(event.delta.text)
    final = stream.get_final_message()
out["stream"] = {
    "first": events[0] if events else None,
    "last": events[-1] if events else None,
    "deltas": events.count("content_block_delta"),
    "text": "".join(pieces),
    "final_text": "".join(block.text for block in final.content if block.type == "text"),
    "stop_reason": final.stop_reason,
    "output_tokens": final.usage.output_tokens,
}

counted = client.messages.count_tokens(model=model, system=system, messages=question, extra_headers=hints)
out["count_tokens"] = counted.input_tokens

try:
    client.messages.create(model="no-such-model", max_tokens=4, messages=question, extra_headers=hints)
    out["unknown_model"] = None
except anthropic.APIStatusError as error:
    out["unknown_model"] = {"status": error.status_code, "type": error.body["error"]["type"] if error.body else None}

if with_tools:
    weather = {"name": "get_weather", "description": "Weather in a city",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    called = client.messages.create(
        model=model, max_tokens=48, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[weather],
        tool_choice={"type": "tool", "name": "get_weather"}, extra_headers=hints,
    )
    uses = [block for block in called.content if block.type == "tool_use"]
    out["tool"] = {"stop_reason": called.stop_reason, "names": [u.name for u in uses],
                   "inputs_are_objects": all(isinstance(u.input, dict) for u in uses)}
    if uses:
        answered = client.messages.create(
            model=model, max_tokens=8, tools=[weather], extra_headers=hints,
            messages=[{"role": "user", "content": "Weather in Paris?"},
                      {"role": "assistant", "content": called.content},
                      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                    "content": "Sunny, 21 C"}]}],
        )
        out["tool"]["after_result"] = answered.stop_reason

print(json.dumps(out))
