"""The request guard in front of the API, run as the ASGI middleware it is, around an app that records what
reaches it (the service's own tests run it inside `bentoml serve`)."""

from __future__ import annotations

import asyncio
import json

from serving import service


def _request(path: str, body: bytes):
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    return scope, receive, send, sent


def test_at_most_max_decodes_json_bodies_are_parsed_at_once():
    """BentoML turns a JSON body into Python objects before the endpoint's decode slot: 16 waveforms of
    30 MB at once grew the service by 5.5 GB. The guard passes on at most MAX_DECODES of them at a time."""
    inside, most = 0, 0

    async def app(scope, receive, send):
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        json.loads((await receive())["body"])
        await asyncio.sleep(0.05)
        inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main():
        guard = service.RequestGuard(app, max_bytes=1 << 20)
        guard._json_bytes = 1 << 20  # no model to read the data type's limit from
        requests = [_request("/predict_json", b'{"input": {"waveform": [0.5]}}') for _ in range(12)]
        await asyncio.gather(*(guard(*r[:3]) for r in requests))
        return [r[3][0]["status"] for r in requests]

    assert asyncio.run(main()) == [200] * 12
    assert most == service.MAX_DECODES


def test_a_json_body_over_its_limit_is_refused_before_it_is_read():
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    guard = service.RequestGuard(app, max_bytes=1 << 20)
    guard._json_bytes = 100
    scope, receive, send, sent = _request("/predict_json", b"[" + b"0," * 100 + b"0]")
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 413 and not reached
    assert b"larger than the limit of 100 bytes" in sent[1]["body"]
