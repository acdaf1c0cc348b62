"""The messages `enqueue_many` derives from one Celery-prepared message are the ones Celery would prepare."""

from __future__ import annotations

import json
import uuid

from app.core.settings import get_settings
from app.jobs import enqueue


def _jobs():
    requests = [
        enqueue.JobRequest("analysis", {"batch_id": f"b{i}"}, idempotency_key=uuid.uuid4().hex if i % 2 else None)
        for i in range(6)
    ] + [enqueue.JobRequest("notification", {"channel": "email", "recipients": ["a@b.example"], "message": "é"})] * 2
    return enqueue._prepare(requests, get_settings())


def test_derived_messages_and_records_equal_what_celery_prepares(monkeypatch):
    derived = _jobs()
    enqueue._capture(derived)
    assert sum(1 for j in derived if j.fields is not None) == len(derived)

    prepared = _jobs()
    for mine, theirs in zip(derived, prepared):
        theirs.job_id, theirs.headers = mine.job_id, mine.headers
    monkeypatch.setattr(enqueue._Template, "of", classmethod(lambda cls, job: None))  # every job through send_task
    enqueue._capture(prepared)

    for mine, theirs in zip(derived, prepared):
        a, b = json.loads(mine.commands[0][1][1]), json.loads(theirs.commands[0][1][1])
        assert a["properties"].pop("delivery_tag") != b["properties"].pop("delivery_tag")
        assert a == b
        assert mine.fields == theirs.fields
        assert [(name, args[0]) for name, args in mine.commands] == [(name, args[0]) for name, args in theirs.commands]
