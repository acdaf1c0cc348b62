"""The jobs side of `/api/metrics`: queue depths, broker unacked messages, registry counts per
queue and state, and live processes per group, read from Redis at scrape time (a few pipelined
calls), so they are exact whenever Prometheus looks and nobody has to record them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from app.celery.broker import UNACKED_KEY, priority_lists
from app.celery.queues import QUEUE_NAMES
from app.core.redis_client import get_broker_redis, get_redis
from app.core.settings import Settings
from app.jobs import heartbeats
from app.jobs.registry import INDEX_KEY, STATES

log = logging.getLogger(__name__)


class LiveCollector:
    """A prometheus-client collector (`collect()` yields metric families) over Redis."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("vigil_redis_up", "1 when the scrape could read Redis")
        per_queue = len(priority_lists(QUEUE_NAMES[0]))
        try:
            broker = get_broker_redis(self.settings)
            with broker.pipeline(transaction=False) as pipe:
                for queue in QUEUE_NAMES:
                    for name in priority_lists(queue):
                        pipe.llen(name)
                pipe.hlen(UNACKED_KEY)
                lengths = pipe.execute()
            client = get_redis(self.settings)
            with client.pipeline(transaction=False) as pipe:
                for queue in QUEUE_NAMES:
                    for state in STATES:
                        pipe.zcard(f"{INDEX_KEY}{queue}:{state}")
                counts = pipe.execute()
            beats = heartbeats.alive(client, self.settings.heartbeat_ttl)
        except Exception as exc:  # a scrape must answer even when Redis does not
            log.warning("metrics: Redis unreadable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("vigil_queue_depth", "Messages waiting in the broker, by queue", labels=["queue"])
        for i, queue in enumerate(QUEUE_NAMES):
            depth.add_metric([queue], sum(lengths[i * per_queue : (i + 1) * per_queue]))
        yield depth
        unacked = GaugeMetricFamily(
            "vigil_broker_unacked_messages", "Messages delivered to a worker and not yet acknowledged"
        )
        unacked.add_metric([], lengths[-1])
        yield unacked
        jobs = GaugeMetricFamily(
            "vigil_registry_jobs", "Jobs in the registry's live index, by queue and state", labels=["queue", "state"]
        )
        i = 0
        for queue in QUEUE_NAMES:
            for state in STATES:
                jobs.add_metric([queue, state], counts[i])
                i += 1
        yield jobs
        alive = GaugeMetricFamily(
            "vigil_processes_alive", "Processes with a fresh heartbeat, by group", labels=["group"]
        )
        for group, members in sorted(heartbeats.by_group(beats).items()):
            alive.add_metric([group], len(members))
        yield alive
