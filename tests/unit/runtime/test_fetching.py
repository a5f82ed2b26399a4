"""The fetch-session bookkeeping of ``services.runtime.fetching`` without a broker: what each
request puts on the wire, and how an answer moves the session on or drops it; and who
installs it (the gateway's services at start, never the SDK) on which aiokafka. The broker
side is in ``tests/integration/test_fetching.py``."""

from __future__ import annotations

import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.protocol.fetch import FetchRequest, FetchRequest_v4, FetchRequest_v11

from services.runtime import fetching
from services.runtime.fetching import _MAX_EPOCH, FetchSession, SessionFetchRequest
from services.runtime.service import prepare_process
from services.runtime.settings import ROOT, Settings

T = "llm.requests"


def request(session: FetchSession, offsets: dict[int, int]) -> SessionFetchRequest:
    base = FetchRequest(500, 1, 1 << 20, 0, [(T, [(p, o, 1 << 20) for p, o in offsets.items()])])
    return SessionFetchRequest(base, session)


def wire(req: SessionFetchRequest, struct_class=FetchRequest_v11):
    s = req.build(struct_class)
    return (
        s.session_id,
        s.session_epoch,
        {p[0]: p[2] for _, ps in s.topics for p in ps},
        s.forgotten_topics_data,
    )


def answer(session_id: int = 7, error_code: int = 0) -> SimpleNamespace:
    return SimpleNamespace(error_code=error_code, session_id=session_id)


def test_without_a_session_the_request_is_full_and_opens_one():
    s = FetchSession()
    req = request(s, {0: 5, 1: 9})
    assert wire(req) == (0, 0, {0: 5, 1: 9}, [])
    req.answered(answer(session_id=7))
    assert (s.id, s.epoch, s.offsets) == (7, 1, {(T, 0): 5, (T, 1): 9})


def test_a_session_request_names_only_moved_partitions_and_forgets_unwanted_ones():
    s = FetchSession(id=7, epoch=1, offsets={(T, 0): 5, (T, 1): 9, (T, 2): 3})
    req = request(s, {0: 6, 1: 9})  # 0 moved on, 1 did not, 2 is no longer wanted
    assert wire(req) == (7, 1, {0: 6}, [(T, [2])])
    req.answered(answer(session_id=7))
    assert (s.epoch, s.offsets) == (2, {(T, 0): 6, (T, 1): 9})


def test_an_error_answer_drops_the_session_and_the_next_request_is_full():
    s = FetchSession(id=7, epoch=4, offsets={(T, 0): 5})
    req = request(s, {0: 5})
    wire(req)
    req.answered(answer(error_code=71))  # INVALID_FETCH_SESSION_EPOCH
    assert (s.id, s.epoch, s.offsets) == (0, 0, {})
    assert wire(request(s, {0: 5})) == (0, 0, {0: 5}, [])


def test_a_broker_that_keeps_no_session_gets_full_requests():
    s = FetchSession()
    req = request(s, {0: 5})
    wire(req)
    req.answered(answer(session_id=0))
    assert (s.id, s.epoch) == (0, 0)
    assert wire(request(s, {0: 5})) == (0, 0, {0: 5}, [])


def test_the_epoch_wraps_to_one():
    s = FetchSession(id=7, epoch=_MAX_EPOCH, offsets={(T, 0): 5})
    req = request(s, {0: 5})
    assert wire(req)[1] == _MAX_EPOCH
    req.answered(answer(session_id=7))
    assert s.epoch == 1


def test_versions_before_sessions_get_aiokafkas_full_request():
    s = FetchSession(id=7, epoch=3, offsets={(T, 0): 5})
    req = request(s, {0: 6, 1: 2})
    struct = req.build(FetchRequest_v4)
    assert {p[0]: p[1] for _, ps in struct.topics for p in ps} == {0: 6, 1: 2}
    req.answered(answer(session_id=7))
    assert (s.id, s.epoch) == (7, 3)  # untouched: that request was not part of the session


# --- who patches aiokafka, and when ---------------------------------------------------------

ORIGINALS = (
    (Fetcher, "_get_actions_per_node"),
    (Fetcher, "_proc_fetch_request"),
    (AIOKafkaClient, "send"),
)


def aiokafkas_own() -> list[bool]:
    return [getattr(cls, name).__module__.startswith("aiokafka.") for cls, name in ORIGINALS]


@pytest.fixture
def unpatched():
    fetching.uninstall()
    yield
    fetching.uninstall()


def test_importing_the_sdk_leaves_aiokafka_unpatched():
    """A fresh interpreter that imports the SDK and the runtime's Kafka wiring (as a caller's
    service does) still has aiokafka's own fetcher and client methods."""
    probe = (
        "import services.client, services.runtime.kafka\n"
        "from aiokafka.client import AIOKafkaClient\n"
        "from aiokafka.consumer.fetcher import Fetcher\n"
        "print([f.__module__ for f in (Fetcher._get_actions_per_node, Fetcher._proc_fetch_request,"
        " AIOKafkaClient.send)])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split("\n")[0] == str(
        ["aiokafka.consumer.fetcher", "aiokafka.consumer.fetcher", "aiokafka.client"]
    )


def test_install_wraps_aiokafka_and_uninstall_gives_its_methods_back(unpatched):
    assert aiokafkas_own() == [True, True, True]
    assert fetching.install() and fetching.installed()
    assert aiokafkas_own() == [False, False, False]
    assert fetching.install()  # once per process: a second call changes nothing
    fetching.uninstall()
    assert aiokafkas_own() == [True, True, True] and not fetching.installed()


def test_any_other_aiokafka_release_is_left_alone_with_one_warning(unpatched, caplog, monkeypatch):
    monkeypatch.setattr(fetching, "_warned", False)
    with caplog.at_level(logging.WARNING, "services.runtime.fetching"):
        assert not fetching.install("0.14.1")
        assert not fetching.install("0.13.0")
    assert aiokafkas_own() == [True, True, True] and not fetching.installed()
    assert [r.getMessage() for r in caplog.records] == [
        "aiokafka 0.14.1 is not a release services.runtime.fetching was written for (0.14.0): "
        "consumers fetch as aiokafka does"
    ]


def test_a_service_process_installs_it_at_start_unless_switched_off(unpatched):
    prepare_process(Settings.from_env({"LLMGW_FAST_FETCH": "0"}))
    assert not fetching.installed()
    prepare_process(Settings.from_env({}))
    assert fetching.installed()
