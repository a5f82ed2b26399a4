"""``/v1/realtime?model=<alias>``: the OpenAI Realtime API over WebSocket, relayed through the
pipeline (the executor holds the provider's WebSocket and its credentials; the edge never does).

Handshake: the API key as ``Authorization: Bearer <key>`` (the official SDKs) or the browsers'
``openai-insecure-api-key.<key>`` subprotocol; without a valid key, or without ``model``, the
handshake is refused (close 1008 before accept, HTTP 403). The beta dialect is spoken when the
client sends ``OpenAI-Beta: realtime=v1`` (or the ``openai-beta.realtime-v1`` subprotocol): the
session is opened in that dialect at the provider, so every server event is in the dialect the
client spoke. A subprotocol offered as ``realtime`` is echoed, as OpenAI does.

Then client events (text frames, at most ``MAX_FRAME_BYTES``) go to the session unchanged, and
server events come back unchanged, until either side closes: the gateway's close code and reason
(1000; 1008 for a policy end such as the session's maximum length or its budget; 1011 when the
session was lost) reach the client as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal
from urllib.parse import parse_qs

from services.client.realtime import POLICY, RealtimeSession, error_event
from services.contracts.errors import GatewayError

from .asgi import Receive, Scope, Send
from .context import Edge

PATH = "/v1/realtime"
MAX_FRAME_BYTES = 1024 * 1024
_KEY_PROTOCOL = "openai-insecure-api-key."


def _dialect(scope: Scope, protocols: list[str]) -> Literal["ga", "beta"]:
    for name, value in scope["headers"]:
        if name == b"openai-beta" and b"realtime=v1" in (v.strip() for v in value.split(b",")):
            return "beta"
    return "beta" if "openai-beta.realtime-v1" in protocols else "ga"


async def serve_realtime(edge: Edge, scope: Scope, receive: Receive, send: Send) -> None:
    """One WebSocket connection on ``/v1/realtime``."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    protocols: list[str] = list(scope.get("subprotocols") or [])
    authorization = next((v for n, v in scope["headers"] if n == b"authorization"), None)
    key = next((p[len(_KEY_PROTOCOL) :] for p in protocols if p.startswith(_KEY_PROTOCOL)), None)
    model = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("model") or [""])[0]
    try:
        caller = edge.keys.authenticate(b"Bearer " + key.encode() if key else authorization)
        gw = edge.gw
    except GatewayError:
        await send({"type": "websocket.close", "code": 1008})
        return
    if not model:
        await send(
            {"type": "websocket.close", "code": 1008, "reason": "the model query parameter is required"}
        )
        return
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if "realtime" in protocols:
        accept["subprotocol"] = "realtime"
    try:
        async with gw.realtime(
            model,
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            api_key=caller.key,
            dialect=_dialect(scope, protocols),
        ) as session:
            await send(accept)
            await _relay(session, receive, send)
    except GatewayError as err:  # the session was not admitted (model, rate limit, budget)
        await send(accept)
        await send(
            {"type": "websocket.send", "text": error_event(err.code, err.message, "invalid_request_error")}
        )
        await send({"type": "websocket.close", "code": POLICY, "reason": err.message[:120]})


async def _relay(session: RealtimeSession, receive: Receive, send: Send) -> None:
    upstream = asyncio.create_task(_client_events(session, receive))
    try:
        async for data in session.raw():
            await send({"type": "websocket.send", "text": data})
    except OSError:  # the client went away mid-send
        pass
    finally:
        upstream.cancel()
        with contextlib.suppress(BaseException):
            await upstream
    if not session.caller_closed:
        with contextlib.suppress(Exception):
            await send(
                {
                    "type": "websocket.close",
                    "code": session.close_code or 1000,
                    "reason": (session.close_reason or "")[:120],
                }
            )


async def _client_events(session: RealtimeSession, receive: Receive) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            await session.caller_close()
            return
        if kind != "websocket.receive":
            continue
        text = message.get("text")
        if text is None:
            raw = message.get("bytes") or b""
            text = raw.decode("utf-8", errors="replace")
        if len(text) > MAX_FRAME_BYTES:
            session.reject_locally(
                "invalid_request_error", f"client event of {len(text)} bytes exceeds {MAX_FRAME_BYTES}"
            )
            continue
        await session.send(text)
