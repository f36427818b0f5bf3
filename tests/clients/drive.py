"""Drives a running sagebrush with the Python clients people use (issue #12): the `openai`
client (chat and completions, streamed and not) and `huggingface_hub.InferenceClient`
(`chat_completion` and `text_generation`, streamed and not). Every request is greedy, so a
streamed answer must equal the unstreamed one; the script checks that itself and prints one
JSON object with every answer, for the Rust test (tests/e2e/python_clients.rs) to compare with
what it reads over raw HTTP.

Usage: python drive.py http://127.0.0.1:PORT
"""

import json
import sys

import openai
from huggingface_hub import InferenceClient

base = sys.argv[1].rstrip("/")
messages = [{"role": "user", "content": "Open the file, please."}]
prompt = "Open the"
out = {"versions": {"openai": openai.__version__}}

oa = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)

# openai: chat
chat = oa.chat.completions.create(model="model", messages=messages, max_tokens=8, temperature=0)
out["openai_chat"] = chat.choices[0].message.content
out["openai_chat_finish"] = chat.choices[0].finish_reason
out["openai_chat_usage"] = chat.usage.total_tokens
pieces, finish, usage, roles = [], None, None, 0
for chunk in oa.chat.completions.create(
    model="model", messages=messages, max_tokens=8, temperature=0, stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage is not None:
        usage = chunk.usage.total_tokens
    for c in chunk.choices:
        if c.delta.role:
            roles += 1
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
out["openai_chat_stream"] = "".join(pieces)
assert out["openai_chat_stream"] == out["openai_chat"], out
assert finish == out["openai_chat_finish"], (finish, out)
assert usage == out["openai_chat_usage"], (usage, out)
assert roles == 1, roles

# openai: chat with logprobs
lp = oa.chat.completions.create(
    model="model", messages=messages, max_tokens=3, temperature=0, logprobs=True, top_logprobs=2
)
out["openai_chat_logprobs"] = [
    [e.token, e.logprob, [t.token for t in e.top_logprobs]] for e in lp.choices[0].logprobs.content
]

# openai: completions
comp = oa.completions.create(model="model", prompt=prompt, max_tokens=8, temperature=0)
out["openai_completion"] = comp.choices[0].text
pieces = []
for chunk in oa.completions.create(
    model="model", prompt=prompt, max_tokens=8, temperature=0, stream=True
):
    for c in chunk.choices:
        pieces.append(c.text)
out["openai_completion_stream"] = "".join(pieces)
assert out["openai_completion_stream"] == out["openai_completion"], out

# openai: a refused field is an error naming it
try:
    oa.chat.completions.create(
        model="model", messages=messages, max_tokens=2, extra_body={"frobnicate": 1}
    )
    raise AssertionError("frobnicate accepted")
except openai.BadRequestError as e:
    out["openai_refused"] = str(e)

# huggingface_hub: chat_completion and text_generation
hub = InferenceClient(base_url=base)
hc = hub.chat_completion(messages, max_tokens=8, temperature=0)
out["hub_chat"] = hc.choices[0].message.content
pieces = []
for chunk in hub.chat_completion(messages, max_tokens=8, temperature=0, stream=True):
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
out["hub_chat_stream"] = "".join(pieces)
assert out["hub_chat_stream"] == out["hub_chat"], out

out["hub_generate"] = hub.text_generation(prompt, max_new_tokens=8)
pieces = list(hub.text_generation(prompt, max_new_tokens=8, stream=True))
out["hub_generate_stream"] = "".join(pieces)
assert out["hub_generate_stream"] == out["hub_generate"], out
details = hub.text_generation(prompt, max_new_tokens=8, details=True)
out["hub_generate_details"] = [details.details.finish_reason, details.details.generated_tokens]
streamed = list(hub.text_generation(prompt, max_new_tokens=8, stream=True, details=True))
out["hub_generate_stream_details"] = [
    streamed[-1].generated_text,
    streamed[-1].details.finish_reason,
    len(streamed),
]
if len(out["hub_generate"]) >= 4:
    stop = out["hub_generate"][2:4]
    out["hub_generate_stop"] = [stop, hub.text_generation(prompt, max_new_tokens=8, stop=[stop])]

print(json.dumps(out))
