"""``GET /metrics``: the gateway's counters in Prometheus text format.

Nothing is counted twice for metrics: the hot path keeps plain integers and
this collector reads them when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.server.gateway import Gateway
from relay.server.guards import require_metrics_token


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(counts.items()):
        family.add_metric([key], value)
    return family


class RelayCollector(Collector):
    """Reads one gateway's counters at scrape time."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gateway = self._gateway
        hub, reader, stats = gateway.hub, gateway.reader, gateway.stats
        yield _labelled(
            "relay_events_published",
            "Events published through this gateway's HTTP API.",
            "workflow_type",
            stats.published_by_type,
        )
        yield _labelled(
            "relay_events_read",
            "Valid events this gateway read from the streams.",
            "workflow_type",
            gateway.ingest.accepted_by_type,
        )
        yield _labelled(
            "relay_events_delivered",
            "Events handed to subscribers (one per subscriber per event).",
            "workflow_type",
            hub.delivered_by_type,
        )
        yield _labelled(
            "relay_liveness_events",
            "Events this gateway published about silent sessions (stalled, completed, failed).",
            "status",
            gateway.liveness.published_by_status,
        )
        yield _labelled(
            "relay_requests_rejected",
            "Requests and client frames answered with an error, by error code.",
            "reason",
            stats.rejected_by_reason,
        )
        yield _counter(
            "relay_invalid_entries",
            "Stream entries skipped because they are not valid events.",
            gateway.ingest.invalid,
        )
        yield _counter(
            "relay_events_conflated", "Events conflated away for slow subscribers.", hub.conflated
        )
        yield _counter(
            "relay_slow_consumers_closed",
            "Subscribers closed because they could not keep up.",
            hub.slow_closed,
        )
        yield _counter(
            "relay_redis_errors", "Redis errors the stream reader met.", reader.redis_errors
        )
        yield _counter(
            "relay_reader_failures",
            "Other errors the stream reader met and carried on after.",
            reader.failures,
        )
        yield _counter(
            "relay_reader_restarts",
            "Times the stream reader's task ended and was started again.",
            reader.restarts,
        )
        yield _counter(
            "relay_stream_resets",
            "Streams found to have lost or rewritten their history, then read again.",
            reader.resets,
        )
        yield _counter(
            "relay_ignored_keys",
            "Keys named like type streams that are not followed (bad name, or not a stream).",
            reader.ignored_keys,
        )
        yield _counter(
            "relay_replays", "Subscriptions resumed with since.", gateway.catchup.replays
        )
        yield _counter(
            "relay_replays_unrecovered",
            "Resumed subscriptions whose history no longer reached back.",
            gateway.catchup.unrecovered,
        )
        yield _gauge("relay_subscribers", "Connected subscribers.", hub.subscribers)
        yield _gauge("relay_subscriptions", "Subscriptions across connections.", hub.subscriptions)
        yield _gauge("relay_sessions", "Sessions in the session view.", len(gateway.view))
        yield _gauge("relay_streams", "Type streams the reader follows.", len(reader.positions))
        yield _gauge("relay_reader_ready", "1 while the reader follows the streams.", reader.ready)
        lag = GaugeMetricFamily(
            "relay_reader_lag_ms",
            "How far behind each stream's newest entry its last read left the reader, in ms: "
            "0 after a read of less than a whole batch, else the age of the last entry read.",
            labels=["workflow_type"],
        )
        for workflow_type, value in sorted(reader.lag_ms.items()):
            lag.add_metric([workflow_type], value)
        yield lag


def registry_for(gateway: Gateway) -> CollectorRegistry:
    """A registry holding this gateway's metrics only."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(gateway))
    return registry


METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this gateway's metrics, behind the metrics token if set."""
    require_metrics_token(request)
    body = generate_latest(request.app[METRICS_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
