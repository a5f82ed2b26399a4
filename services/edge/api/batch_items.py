"""A batch's lines as the request events its items run as, and the record that creates the batch
(README "Batches"); shared by OpenAI's Batch API (``batches``) and Anthropic's Message Batches
(``message_batches``).

Each line's body becomes its request event exactly as the HTTP route of its endpoint would make
it (``chat.parse_chat`` / ``embeddings.parse_embeddings`` / ``anthropic_wire.parse_messages``,
the same checks, the same ``ValidationError``), then an item of the batch: request id
``<batch id>.<index>``, a job (``job: true``, no ``reply_to``), ``batch`` naming the line. Large
inline media are stored first, as the chat route does (``claims``). The events are written, one
JSON per line, to ``tenants/<tenant>/batches/<batch id>/requests.jsonl`` in the media bucket,
where the batch service reads them; then the batch's ``validating`` record goes to ``llm.batches``.
"""

from __future__ import annotations

import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pydantic

from services.contracts.events import (
    BatchApi,
    BatchCounts,
    BatchItem,
    BatchUpdated,
    ChatRequested,
    EmbedRequested,
    utcnow,
)
from services.runtime.batches import item_id
from services.runtime.config import ModelConfig
from services.runtime.media.refs import tenant_prefix

from ..auth import Caller
from ..claims import claim_check
from .anthropic_tokens import estimate_tokens
from .chat import ChatCall, invalid
from .embeddings import EmbedCall

if TYPE_CHECKING:
    from ..context import Edge

ItemRequest = ChatRequested | EmbedRequested
#: An alias's output limit when the configuration does not name the alias (the router refuses
#: the item then; the batch's estimate just needs a number).
DEFAULT_MAX_OUTPUT = ModelConfig.model_fields["max_output_tokens"].default
_ALNUM = string.ascii_letters + string.digits


def openai_batch_id() -> str:
    """``batch_`` + 32 hex digits (no ``.``: item ids are ``<batch id>.<index>``)."""
    return f"batch_{uuid.uuid4().hex}"


def anthropic_batch_id() -> str:
    """``msgbatch_`` + 24 letters and digits."""
    return "msgbatch_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def requests_key(tenant_id: str, batch_id: str) -> str:
    return f"{tenant_prefix(tenant_id)}batches/{batch_id}/requests.jsonl"


@dataclass
class Item:
    """One line's request event, with its estimate for the batch's admission."""

    event: ItemRequest
    prompt_tokens: int
    max_output_tokens: int
    call: ChatCall | None = None  # chat items: what the event was built from (the claim check's input)


def _key(caller: Caller) -> dict[str, Any]:
    return {"api_key": caller.key} if caller.key else {}


def _as_item(event: ItemRequest, batch_id: str, custom_id: str, index: int) -> ItemRequest:
    return event.model_copy(
        update={
            "job": True,
            "reply_to": None,
            "stream": False,
            "batch": BatchItem(batch_id=batch_id, custom_id=custom_id, index=index),
        }
    )


def _max_output(edge: Edge, alias: str) -> int:
    model = edge.config.models.get(alias)
    return model.max_output_tokens if model is not None else DEFAULT_MAX_OUTPUT


def chat_item(edge: Edge, caller: Caller, call: ChatCall, batch_id: str, custom_id: str, index: int) -> Item:
    """The item of a checked chat body (OpenAI's or Anthropic's, mapped); ``ValidationError``
    naming the field when the event's own checks refuse it."""
    call.extra.pop("async", None)  # the route's way to ask for a job: every item is one
    try:
        event = edge.gw.request(
            caller,
            call.model,
            call.messages,
            stream=False,
            request_id=item_id(batch_id, index),
            extra=call.extra,
            **call.fields,
            **_key(caller),
        )
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None
    own = call.fields.get("max_tokens") or call.extra.get("max_completion_tokens")
    out = own if type(own) is int and own > 0 else _max_output(edge, call.model)
    return Item(_as_item(event, batch_id, custom_id, index), estimate_tokens(call), out, call)


def embed_item(
    edge: Edge, caller: Caller, call: EmbedCall, batch_id: str, custom_id: str, index: int
) -> Item:
    call.extra.pop("async", None)
    try:
        event = edge.gw.embed_request(
            caller,
            call.model,
            call.input,
            dimensions=call.dimensions,
            encoding_format=call.encoding_format,
            request_id=item_id(batch_id, index),
            extra=call.extra,
            **call.fields,
            **_key(caller),
        )
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None
    prompt = sum(-(-len(t.encode()) // 4) for t in call.input)  # UTF-8 bytes / 4, as estimate_tokens
    return Item(_as_item(event, batch_id, custom_id, index), prompt, 0)


async def claim_media(edge: Edge, caller: Caller, items: list[Item]) -> None:
    """Store the large inline media of the chat items (``claims``), each event then naming its
    objects: after every line was checked, so a refused batch stores nothing."""
    limit = edge.config.media.inline_max_bytes
    for item in items:
        if item.call is None:
            continue
        messages = await claim_check(edge.storage, caller.tenant_id, item.call.messages, limit)
        if messages is not item.call.messages:
            item.call.messages = messages
            batch = item.event.batch
            assert batch is not None
            rebuilt = chat_item(edge, caller, item.call, batch.batch_id, batch.custom_id, batch.index)
            item.event = rebuilt.event


def custom_ids_key(requests: str) -> str:
    """The key of a batch's custom ids (a JSON list, in input order), beside its requests."""
    return requests.rpartition("/")[0] + "/custom_ids.json"


async def write_requests(edge: Edge, tenant_id: str, batch_id: str, items: list[Item]) -> str:
    """Write the items' events, one JSON per line, to the batch's requests object (its key), and
    their custom ids beside them (what names the items that never ran, in the results)."""
    key = requests_key(tenant_id, batch_id)
    body = b"".join(i.event.model_dump_json().encode() + b"\n" for i in items)
    ids = [i.event.batch.custom_id if i.event.batch is not None else "" for i in items]
    await edge.files.put(
        custom_ids_key(key), orjson.dumps(ids), "application/json", filename="custom_ids.json"
    )
    await edge.files.put(key, body, "application/x-ndjson", filename="requests.jsonl")
    return key


async def read_custom_ids(edge: Edge, batch: BatchUpdated) -> list[str]:
    """The batch's custom ids, in input order (``write_requests``)."""
    ids = orjson.loads(await edge.files.get(custom_ids_key(batch.requests_key)))
    return [str(i) for i in ids]


def created(
    edge: Edge,
    caller: Caller,
    *,
    api: BatchApi,
    batch_id: str,
    endpoint: str,
    items: list[Item],
    key: str,
    input_file_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> BatchUpdated:
    """The batch's first record: ``validating``, its window from now."""
    now = utcnow()
    window = edge.config.batches.completion_window_s
    models = {i.event.model for i in items}
    return BatchUpdated(
        request_id=batch_id,
        tenant_id=caller.tenant_id,
        user_id=caller.user_id,
        batch_id=batch_id,
        api_key=caller.key,
        api=api,
        status="validating",
        endpoint=endpoint,
        model=models.pop() if len(models) == 1 else None,
        input_file_id=input_file_id,
        requests_key=key,
        completion_window_s=window,
        created_at=now,
        expires_at=now + timedelta(seconds=window),
        counts=BatchCounts(total=len(items)),
        metadata=metadata,
        prompt_tokens=sum(i.prompt_tokens for i in items),
        max_output_tokens=sum(i.max_output_tokens for i in items),
    )
