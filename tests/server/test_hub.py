"""Routing: each subscriber gets exactly the events its subscriptions match, once."""

from __future__ import annotations

from relay.protocol.frames import ANY_TYPE, Envelope
from relay.server.hub import Hub
from relay.server.subscriber import Subscriber


async def _noop(*_: object) -> None:
    return None


class Recorder(Subscriber):
    """A subscriber whose deliveries are recorded instead of sent."""

    __slots__ = ("got",)

    def __init__(self) -> None:
        super().__init__(_noop, _noop, limit=100)
        self.got: list[str] = []

    def deliver(self, item: Envelope | str) -> None:
        assert isinstance(item, Envelope)
        self.got.append(item.id)


def env(entry_id: str, wtype: str = "map", session: str = "s1") -> Envelope:
    return Envelope(entry_id, wtype, session, False, "{}")


def test_routes_by_type_session_and_wildcards() -> None:
    hub = Hub()
    by_type, by_session, everything, session_any_type, other = (Recorder() for _ in range(5))
    for sub in (by_type, by_session, everything, session_any_type, other):
        hub.attach(sub)
    hub.subscribe(by_type, ("map", None))
    hub.subscribe(by_session, ("map", "s1"))
    hub.subscribe(everything, (ANY_TYPE, None))
    hub.subscribe(session_any_type, (ANY_TYPE, "s2"))
    hub.subscribe(other, ("character", None))

    hub.route(env("1-0", "map", "s1"))
    hub.route(env("2-0", "map", "s2"))
    hub.route(env("3-0", "encounter", "s2"))

    assert by_type.got == ["1-0", "2-0"]
    assert by_session.got == ["1-0"]
    assert everything.got == ["1-0", "2-0", "3-0"]
    assert session_any_type.got == ["2-0", "3-0"]
    assert other.got == []


def test_overlapping_subscriptions_deliver_once() -> None:
    hub = Hub()
    sub = Recorder()
    hub.attach(sub)
    for key in (("map", None), ("map", "s1"), (ANY_TYPE, None), (ANY_TYPE, "s1")):
        hub.subscribe(sub, key)
    assert hub.route(env("1-0")) == 1
    assert sub.got == ["1-0"]


def test_unsubscribe_and_detach_clean_the_index() -> None:
    hub = Hub()
    sub = Recorder()
    hub.attach(sub)
    hub.subscribe(sub, ("map", None))
    hub.subscribe(sub, ("map", "s1"))
    assert hub.unsubscribe(sub, ("map", None))
    assert not hub.unsubscribe(sub, ("map", None))
    hub.route(env("1-0", session="s2"))
    assert sub.got == []
    hub.detach(sub)
    assert hub.subscriptions == 0
    assert hub.subscribers == 0
    assert hub.route(env("2-0")) == 0
