"""Drives `internvl serve` with the official `openai` Python client.

Usage: check.py CHAT_BASE_URL EMBED_BASE_URL IMAGE_PATH
Prints one JSON document: the models listed, the non-streamed and streamed answers, the answer
about the image, and the embedding sizes. Exits non-zero when the client rejects a response.
"""
import base64
import json
import sys

from openai import OpenAI

chat_url, embed_url, image_path = sys.argv[1:4]
chat = OpenAI(base_url=chat_url + "/v1", api_key="unused")
models = [m.id for m in chat.models.list().data]
model = models[0]
messages = [{"role": "user", "content": "Hello, who are you?"}]
full = chat.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
stream = chat.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0, stream=True)
streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
image = base64.b64encode(open(image_path, "rb").read()).decode()
vision = chat.chat.completions.create(
    model=model,
    max_tokens=4,
    temperature=0,
    logprobs=True,
    top_logprobs=2,
    messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image}},
        {"type": "text", "text": "What is in the image?"},
    ]}],
)
try:
    chat.chat.completions.create(model="no-such-model", messages=messages, max_tokens=2)
    unknown_model_error = None
except Exception as e:  # the client raises NotFoundError for a 404
    unknown_model_error = type(e).__name__
embed = OpenAI(base_url=embed_url + "/v1", api_key="unused")
embed_model = embed.models.list().data[0].id
vectors = embed.embeddings.create(model=embed_model, input=["a photo of a cat", "一张熊猫的照片"])
print(json.dumps({
    "models": models,
    "text": full.choices[0].message.content,
    "finish_reason": full.choices[0].finish_reason,
    "usage": full.usage.model_dump(),
    "streamed": streamed,
    "vision_text": vision.choices[0].message.content,
    "vision_logprobs": len(vision.choices[0].logprobs.content),
    "unknown_model_error": unknown_model_error,
    "embedding_dims": [len(d.embedding) for d in vectors.data],
}))
