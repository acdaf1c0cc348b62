"""The baseline for P1: a bare Celery app on the same Redis, default configuration, one no-op task.

`celery -A bench.bare_app worker -Q bare` runs it. The broker URL comes from REDIS_URL so it
shares the Redis server with Vigil's workers in the same benchmark run.
"""

import os

from celery import Celery

app = Celery("bare", broker=os.environ["REDIS_URL"])
app.conf.update(task_serializer="json", accept_content=["json"], task_default_queue="bare")


@app.task(name="bare.noop")
def noop(**kwargs):
    return None
