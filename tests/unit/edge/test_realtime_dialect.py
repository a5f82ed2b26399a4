"""The Realtime dialect a client speaks, from its handshake; a turn's end, from its event text."""

from __future__ import annotations

from services.client.realtime import _is_response_done
from services.edge.realtime import _dialect


def test_beta_by_header_or_subprotocol_else_ga():
    assert _dialect({"headers": [(b"openai-beta", b"realtime=v1")]}, []) == "beta"
    assert _dialect({"headers": [(b"openai-beta", b"assistants=v2, realtime=v1")]}, []) == "beta"
    assert _dialect({"headers": []}, ["realtime", "openai-beta.realtime-v1"]) == "beta"
    assert _dialect({"headers": [(b"openai-beta", b"assistants=v2")]}, ["realtime"]) == "ga"


def test_response_done_is_told_from_its_type_not_from_text_inside_it():
    assert _is_response_done('{"event_id":"event_abc","type":"response.done","response":{}}')
    assert not _is_response_done(
        '{"event_id":"e","type":"response.output_text.delta","delta":"\\"response.done\\""}'
    )
