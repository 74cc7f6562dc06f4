"""Entries a gateway wrote itself are read back without decoding, and nothing else is."""

from __future__ import annotations

import aiohttp
import orjson
from aiohttp import web

from relay.protocol.event import ProgressEvent
from relay.protocol.stream_ids import StreamId
from relay.server.gateway import GATEWAY
from relay.server.own_entries import MAX_OWN_ENTRIES, OwnEntries
from tests.conftest import RedisServer
from tests.helpers import event, session_state
from tests.server.test_read_own_writes import app_without_reader, post
from tests.server.test_reader import Collector

__all__ = ["app_without_reader"]  # the fixture, used here by name

STREAM = "workflow:progress:map"


def _event(progress: float = 10) -> ProgressEvent:
    return ProgressEvent(session_id="s1", workflow_type="map", step="a", progress=progress, ts=5)


def test_an_entry_read_back_as_written_answers_its_event_once() -> None:
    own = OwnEntries()
    published = _event()
    fields = published.stream_fields()
    own.wrote("map", "5-0", fields, published)
    assert own.read_back("map", "5-0", dict(fields)) is published
    assert own.read_back("map", "5-0", fields) is None
    assert len(own) == 0


def test_an_entry_that_differs_in_anything_is_not_taken_for_the_written_one() -> None:
    own = OwnEntries()
    published = _event()
    fields = published.stream_fields()
    for workflow_type, entry_id, read in [
        ("map", "5-0", {**fields, "progress": "11"}),
        ("map", "5-0", {**fields, "extra": "field"}),
        ("map", "5-0", {k: v for k, v in fields.items() if k != "ts"}),
        ("map", "5-1", fields),
        ("quest", "5-0", fields),
    ]:
        own.wrote("map", "5-0", fields, published)
        assert own.read_back(workflow_type, entry_id, read) is None
        own.read_back("map", "5-0", fields)


def test_entries_never_read_back_are_forgotten_oldest_first() -> None:
    own = OwnEntries()
    published = _event()
    fields = published.stream_fields()
    for n in range(MAX_OWN_ENTRIES + 1):
        own.wrote("map", f"{n}-0", fields, published)
    assert len(own) == MAX_OWN_ENTRIES
    assert own.read_back("map", "0-0", fields) is None
    assert own.read_back("map", f"{MAX_OWN_ENTRIES}-0", fields) is published


async def test_the_reader_takes_its_own_entry_without_counting_it_twice(
    app_without_reader: tuple[str, web.Application],
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    base, app = app_without_reader
    gateway = app[GATEWAY]
    answer = await post(http, f"{base}/api/workflows/progress", event("own", progress=30))
    assert len(gateway.view.own) == 1
    with redis_server.client() as client:
        entries = client.xrange(STREAM, answer["id"], answer["id"])
    gateway.ingest(STREAM, entries, True)
    assert len(gateway.view.own) == 0
    assert gateway.ingest.invalid == 0
    assert gateway.ingest.accepted_by_type["map"] == 1


async def test_an_entry_rewritten_at_a_written_id_is_validated_as_any_other(
    app_without_reader: tuple[str, web.Application],
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    # Redis lost the stream and a worker wrote its own entries at the same
    # ids: what the gateway wrote proves nothing about them.
    base, app = app_without_reader
    gateway = app[GATEWAY]
    url = f"{base}/api/workflows/progress"
    bad = await post(http, url, event("forged", progress=30))
    good = await post(http, url, event("forged", progress=40))
    with redis_server.client() as client:
        written = dict(client.xrange(STREAM, bad["id"], good["id"]))
        client.delete(STREAM)
        client.xadd(STREAM, {**written[bad["id"]], "progress": "500"}, id=bad["id"])
        client.xadd(STREAM, {**written[good["id"]], "step": "forged"}, id=good["id"])
        entries = client.xrange(STREAM, bad["id"], good["id"])
    collector = Collector()
    gateway.hub.attach(collector)
    gateway.hub.subscribe(collector, ("*", None))
    gateway.ingest(STREAM, entries, True)
    assert gateway.ingest.invalid == 1
    assert gateway.ingest.accepted_by_type["map"] == 1
    assert len(gateway.view.own) == 0
    # The rewritten entry is routed as it reads, not as the gateway wrote it;
    # the view, which had the gateway's event at that id, keeps it.
    [routed] = collector.got
    assert routed.id == good["id"]
    assert orjson.loads(routed.data_json)["step"] == "forged"
    state = await session_state(http, base, "forged")
    assert state is not None
    assert state["step"] == "analyzing"


async def test_an_entry_the_reader_read_before_the_publish_answered_is_not_kept(
    app_without_reader: tuple[str, web.Application], http: aiohttp.ClientSession
) -> None:
    # The reader's answer can come before the publish's: nothing would read it back.
    base, app = app_without_reader
    gateway = app[GATEWAY]
    gateway.reader.positions[STREAM] = StreamId(2**62, 0)
    await post(http, f"{base}/api/workflows/progress", event("raced"))
    assert len(gateway.view.own) == 0
    assert await session_state(http, base, "raced") is not None
