"""Drives the Messages API's wider surface through ccflare with the official `anthropic` SDK.

Usage: sdk_messages_api.py MODE, with ANTHROPIC_BASE_URL naming ccflare. Prints one JSON
object for the Rust test (tests/messages_api.rs) to check. Modes:

- `web_search`: a streamed answer with the web search tool (the mock runs two searches);
- `batches`: create a batch, wait for its end, read its results through `results_url`;
- `upload`: upload the file named by CCFLARE_TEST_UPLOAD with the Files API (beta).
"""

import json
import os
import sys
import time

import anthropic

client = anthropic.Anthropic(api_key="any-key-the-proxy-ignores", max_retries=0)
mode = sys.argv[1]
out = {"sdk_version": anthropic.__version__}

if mode == "web_search":
    with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Search the web for ccflare"}],
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        extra_headers={"x-mock-web-searches": "2"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    out["text"] = text
    out["blocks"] = [block.type for block in final.content]
    out["web_search_requests"] = final.usage.server_tool_use.web_search_requests
    out["output_tokens"] = final.usage.output_tokens
elif mode == "batches":
    batch = client.messages.batches.create(
        requests=[
            {
                "custom_id": f"req-{n}",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 32,
                    "messages": [{"role": "user", "content": f"Hello {n}"}],
                },
            }
            for n in range(3)
        ]
    )
    out["batch_id"] = batch.id
    deadline = time.monotonic() + 30
    while batch.processing_status != "ended" and time.monotonic() < deadline:
        time.sleep(0.05)
        batch = client.messages.batches.retrieve(batch.id)
    out["results_url"] = batch.results_url
    results = sorted(client.messages.batches.results(batch.id), key=lambda r: r.custom_id)
    out["results"] = [
        {"custom_id": r.custom_id, "type": r.result.type, "text": r.result.message.content[0].text}
        for r in results
    ]
    out["listed"] = [b.id for b in client.messages.batches.list(limit=10)]
elif mode == "upload":
    path = os.environ["CCFLARE_TEST_UPLOAD"]
    with open(path, "rb") as f:
        uploaded = client.beta.files.upload(file=("big.bin", f, "application/octet-stream"))
    out["file_id"] = uploaded.id
    out["size_bytes"] = uploaded.size_bytes
    out["metadata_id"] = client.beta.files.retrieve_metadata(uploaded.id).id
else:
    raise SystemExit(f"unknown mode {mode}")

print(json.dumps(out))
