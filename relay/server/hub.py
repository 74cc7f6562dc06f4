"""Subscriptions and routing: which subscribers get which event.

Subscriptions are indexed by ``(workflow_type, session_id)`` where either part
may be a wildcard (``"*"`` for the type, ``None`` for the session), so routing
one event is four dictionary lookups plus one call per matching subscriber,
whatever the number of other subscribers.

Owner-scoped subscriptions (a token's ``owner_sessions`` claim, see
:mod:`relay.server.auth`) have an index of their own, keyed by the owner
first: an event of an owned session costs four lookups more, under its
owner, and nobody else's subscriptions are looked at.

A child session's events (see :mod:`relay.protocol.children`) also reach the
subscriptions narrowed to its parent's id: two lookups more, and two more
under its owner.
"""

from __future__ import annotations

from typing import Any, TypeVar

from relay.protocol.frames import ANY_TYPE, Envelope, SubscriptionKey
from relay.server.coverage import Cuts
from relay.server.subscriber import Flusher, Subscriber

# An owner-scoped subscription's index key: the owner, then the subscription's own key.
OwnedKey = tuple[str, str, str | None]
K = TypeVar("K", SubscriptionKey, OwnedKey)


class Hub:
    """The in-process routing table of one gateway."""

    def __init__(self) -> None:
        self._index: dict[SubscriptionKey, set[Subscriber]] = {}
        # (owner, workflow_type, session_id) -> the subscribers scoped to that owner.
        self._owned: dict[OwnedKey, set[Subscriber]] = {}
        # Per subscriber, the owner each of its owner-scoped subscriptions is narrowed to.
        self._scopes: dict[Subscriber, dict[SubscriptionKey, str]] = {}
        self._subscribers: set[Subscriber] = set()
        # Writes what subscribers with a direct path were handed, once per batch routed.
        self.flusher = Flusher()
        self.routed = 0
        self.delivered = 0
        self.delivered_by_type: dict[str, int] = {}
        # What detached subscribers went through, so the totals survive them.
        self.conflated_closed = 0
        self.slow_closed = 0

    @property
    def subscribers(self) -> int:
        """Connections currently attached."""
        return len(self._subscribers)

    @property
    def subscriptions(self) -> int:
        """Subscriptions across every connection."""
        groups = (*self._index.values(), *self._owned.values())
        return sum(len(group) for group in groups)

    def attach(self, subscriber: Subscriber) -> None:
        """Register a connection (before it subscribes to anything)."""
        self._subscribers.add(subscriber)

    def check_sends(self, now: float) -> None:
        """Close every connection whose send has been stuck too long (see Subscriber.check_send)."""
        for subscriber in self._subscribers:
            subscriber.check_send(now)

    def detach(self, subscriber: Subscriber) -> None:
        """Forget a connection and every subscription it held."""
        for key in subscriber.subscriptions:
            self._discard(key, subscriber)
        subscriber.subscriptions.clear()
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            self.conflated_closed += subscriber.conflated
            self.slow_closed += subscriber.dropped_slow

    @property
    def conflated(self) -> int:
        """Events conflated away across every subscriber, past and present."""
        return self.conflated_closed + sum(s.conflated for s in self._subscribers)

    def subscribe(
        self,
        subscriber: Subscriber,
        key: SubscriptionKey,
        live: Cuts | None = None,
        owner: str | None = None,
    ) -> None:
        """Route events matching ``key`` to ``subscriber`` from now on.

        ``live``: the stream position(s) above which events are routed live
        from here (see :mod:`relay.server.coverage`); None claims nothing.
        ``owner``: only events of sessions this user owns match.
        """
        if self.scope(subscriber, key) != owner:
            self._discard(key, subscriber)
        if owner is None:
            self._index.setdefault(key, set()).add(subscriber)
        else:
            self._owned.setdefault((owner, *key), set()).add(subscriber)
            self._scopes.setdefault(subscriber, {})[key] = owner
        subscriber.cover(key, live)

    def scope(self, subscriber: Subscriber, key: SubscriptionKey) -> str | None:
        """The owner ``subscriber``'s subscription to ``key`` is narrowed to, if any."""
        scopes = self._scopes.get(subscriber)
        return None if scopes is None else scopes.get(key)

    def unsubscribe(self, subscriber: Subscriber, key: SubscriptionKey) -> bool:
        """Stop routing ``key`` to ``subscriber``; False if it was not subscribed."""
        if subscriber.subscriptions.pop(key, None) is None:
            return False
        self._discard(key, subscriber)
        return True

    def _discard(self, key: SubscriptionKey, subscriber: Subscriber) -> None:
        scopes = self._scopes.get(subscriber)
        owner = None if scopes is None else scopes.pop(key, None)
        if owner is None:
            _leave(self._index, key, subscriber)
            return
        if not scopes:
            del self._scopes[subscriber]
        _leave(self._owned, (owner, *key), subscriber)

    def broadcast(self, workflow_type: str, frame: str) -> int:
        """Hand a control frame once to every subscriber with a subscription in ``workflow_type``.

        Subscriptions to ``*`` count too, whatever their session. Walks the
        whole index, so it is for rare events only.
        """
        targets = {
            subscriber
            for (wtype, _), group in self._index.items()
            if wtype in (workflow_type, ANY_TYPE)
            for subscriber in group
        }
        targets.update(
            subscriber
            for (_, wtype, _), group in self._owned.items()
            if wtype in (workflow_type, ANY_TYPE)
            for subscriber in group
        )
        for subscriber in targets:
            subscriber.deliver(frame)
        return len(targets)

    def route(self, envelope: Envelope) -> int:
        """Hand one event to every matching subscriber, once each."""
        index = self._index
        wtype, session = envelope.workflow_type, envelope.session_id
        groups = [
            group
            for group in (
                index.get((wtype, None)),
                index.get((ANY_TYPE, None)),
                index.get((wtype, session)),
                index.get((ANY_TYPE, session)),
            )
            if group
        ]
        owner, parent = envelope.owner, envelope.parent_id
        if parent is not None:
            # A child's events reach its parent's subscribers too.
            groups.extend(group for group in _parent_groups(index, envelope, parent) if group)
        if owner is not None and self._owned:
            owned = self._owned
            groups.extend(
                group
                for group in (
                    owned.get((owner, wtype, None)),
                    owned.get((owner, ANY_TYPE, None)),
                    owned.get((owner, wtype, session)),
                    owned.get((owner, ANY_TYPE, session)),
                    *(_parent_groups(owned, envelope, parent, owner) if parent else ()),
                )
                if group
            )
        self.routed += 1
        if not groups:
            return 0
        targets = groups[0] if len(groups) == 1 else set().union(*groups)
        for subscriber in targets:
            subscriber.deliver(envelope)
        count = len(targets)
        self.delivered += count
        by_type = self.delivered_by_type
        by_type[wtype] = by_type.get(wtype, 0) + count
        return count


def _leave(index: dict[K, set[Subscriber]], key: K, subscriber: Subscriber) -> None:
    """Take ``subscriber`` out of ``index[key]``, and the key out once nobody is left."""
    group = index.get(key)
    if group is not None:
        group.discard(subscriber)
        if not group:
            del index[key]


def _parent_groups(
    index: dict[Any, set[Subscriber]], envelope: Envelope, parent: str, *scope: str
) -> tuple[set[Subscriber] | None, set[Subscriber] | None]:
    """The subscriptions to a child's parent: by its type once the parent reported, and ``*``.

    ``scope``: the child's owner, for the owner-scoped index.
    """
    parent_type = envelope.parent_type or ANY_TYPE
    return index.get((*scope, ANY_TYPE, parent)), index.get((*scope, parent_type, parent))
