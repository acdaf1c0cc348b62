"""The Redis result backend, minus the subscription Celery makes for every task *sent*.

Celery's Redis backend subscribes the sending process to each new task's result channel, so that
a later `AsyncResult.get()` returns quickly. Vigil's senders (the API, the watcher, the pipeline)
never wait on results; they read the job registry. The subscriptions only cost a pub/sub channel
per job in flight, and after a Redis outage they leave the sender's backend in a state Celery
says "must be restarted" (the API then answered 500 to every enqueue). Results are still stored
by the workers as usual, and `get()` still works: it subscribes when it is called.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend as _CeleryRedisBackend


class RedisBackend(_CeleryRedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None
