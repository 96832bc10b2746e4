"""Drives ccflare with the official `anthropic` Python SDK, as a user's program would.

Reads the proxy's base URL from ANTHROPIC_BASE_URL (the only change a user makes), makes a
plain and a streaming Messages request, and prints what it got as one JSON object for the
Rust test to check.
"""

import json
import os

import anthropic

# The key a user would give the SDK: a ccflare client key when the test sets one.
api_key = os.environ.get("CCFLARE_TEST_API_KEY", "any-key-the-proxy-ignores")
client = anthropic.Anthropic(api_key=api_key, max_retries=0)

plain = client.messages.create(
    model="claude-haiku-4-5",
    max_tokens=64,
    messages=[{"role": "user", "content": "Say hello"}],
)

with client.messages.stream(
    model="claude-haiku-4-5",
    max_tokens=64,
    messages=[{"role": "user", "content": "Say hello, streaming"}],
) as stream:
    streamed_text = "".join(stream.text_stream)
    final = stream.get_final_message()

print(
    json.dumps(
        {
            "sdk_version": anthropic.__version__,
            "base_url": os.environ["ANTHROPIC_BASE_URL"],
            "plain_text": plain.content[0].text,
            "plain_usage": {"input": plain.usage.input_tokens, "output": plain.usage.output_tokens},
            "stream_text": streamed_text,
            "stream_usage": {"input": final.usage.input_tokens, "output": final.usage.output_tokens},
        }
    )
)
