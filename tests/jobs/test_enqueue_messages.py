"""The messages `enqueue_many` derives from one Celery-prepared message are the ones Celery would prepare:
within one batch, and across single requests, threads and request ids (the per-process templates)."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from app.celery.app import celery
from app.core.context import request_id_var
from app.core.settings import get_settings
from app.jobs import enqueue, publish


def _jobs():
    requests = [
        enqueue.JobRequest("analysis", {"batch_id": f"b{i}"}, idempotency_key=uuid.uuid4().hex if i % 2 else None)
        for i in range(6)
    ] + [enqueue.JobRequest("notification", {"channel": "email", "recipients": ["a@b.example"], "message": "é"})] * 2
    return enqueue._prepare(requests, get_settings())


def _by_celery(monkeypatch, jobs):
    """Every job through `send_task`, as if no template were kept or could be made."""
    with monkeypatch.context() as m:
        m.setattr(publish, "_templates_apply", lambda: False)
        publish.capture(jobs)


def _same(mine, theirs):
    """Byte for byte the message kombu serialised, but for the delivery tag; the same registry record
    and the same doorbell commands."""
    text, celerys = mine.commands[0][1][1], theirs.commands[0][1][1]
    tag, their_tag = (json.loads(m)["properties"]["delivery_tag"] for m in (text, celerys))
    assert tag != their_tag and text.count(tag) == 1
    assert text.replace(tag, their_tag) == celerys
    assert mine.fields == theirs.fields
    assert [(name, args[0]) for name, args in mine.commands] == [(name, args[0]) for name, args in theirs.commands]
    assert mine.commands[1:] == theirs.commands[1:]


def _twin(jobs):
    """The same requests prepared again, with the same job ids and headers."""
    again = enqueue._prepare(
        [enqueue.JobRequest(j.name, j.kwargs, "normal", j.key, validated=True) for j in jobs], get_settings()
    )
    for mine, theirs in zip(jobs, again):
        theirs.job_id, theirs.headers, theirs.queue = mine.job_id, mine.headers, mine.queue
    return again


def test_derived_messages_and_records_equal_what_celery_prepares(monkeypatch):
    publish.forget_templates()
    derived = _jobs()
    publish.capture(derived)
    assert sum(1 for j in derived if j.fields is not None) == len(derived)

    prepared = _twin(derived)
    _by_celery(monkeypatch, prepared)
    for mine, theirs in zip(derived, prepared):
        _same(mine, theirs)


@pytest.fixture
def sends(monkeypatch):
    """The task names `send_task` was called with (it still runs: this only counts)."""
    calls: list[str] = []
    real = celery.send_task

    def counting(name, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(celery, "send_task", counting)
    return calls


def _in_thread(fn):
    """Run `fn` in a new thread (its own Celery thread id, `reply_to`, and context) and re-raise."""
    failure: list[BaseException] = []

    def run():
        try:
            fn()
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if failure:
        raise failure[0]


def test_single_requests_are_derived_from_templates_kept_across_requests(monkeypatch, sends):
    publish.forget_templates()
    alert = {"rule": "r1", "score": 0.93, "tags": ["a", "b"], "nested": {"x": [1, 2, {"y": None}]}}
    requests = [
        ("analysis", {"batch_id": "one"}, None, None),
        ("analysis", {"batch_id": "two", "camera_id": "porch"}, None, None),
        ("analysis", {"batch_id": "three"}, None, "req-a"),
        ("analysis", {"batch_id": "four"}, None, "req-b"),
        ("analysis", {"batch_id": "five"}, "key-" + uuid.uuid4().hex, "req-c"),
        ("analysis", {"batch_id": "six"}, "key-" + uuid.uuid4().hex, "req-d"),
        ("analysis", {"batch_id": "seven"}, "key-" + uuid.uuid4().hex, None),
        (
            "notification",
            {"channel": "webhook", "url": "https://h.example/x", "message": "é ☃", "alert": alert},
            None,
            "r",
        ),
        (
            "notification",
            {"channel": "webhook", "url": "https://h.example/y", "message": "2", "alert": alert},
            None,
            "s",
        ),
    ]
    derived_sends = []
    for family, payload, key, rid in requests:
        [job] = enqueue._prepare([enqueue.JobRequest(family, payload, idempotency_key=key)], get_settings())
        [twin] = _twin([job])

        def one(job=job, twin=twin, rid=rid):
            request_id_var.set(rid)
            before = len(sends)
            publish.capture([job])  # one request, as POST /jobs makes it
            derived_sends.append(len(sends) - before)
            _by_celery(monkeypatch, [twin])  # what Celery makes of the same job, in the same thread

        _in_thread(one)
        _same(job, twin)
        assert job.fields["request_id"] == rid and json.loads(job.commands[0][1][1])["headers"].get(
            "vigil_request_id"
        ) == (rid or None)
    # Celery prepared only the first request of each group: (analysis, no key, no request id),
    # (analysis, no key, request id), (analysis, key, request id), (analysis, key, none), (notification, ...).
    assert sum(derived_sends) == 5 and derived_sends[1] == 0


def test_no_template_inside_a_task_or_with_another_publish_receiver(monkeypatch, sends):
    publish.forget_templates()
    first = enqueue._prepare([enqueue.JobRequest("analysis", {"batch_id": "x"})], get_settings())
    publish.capture(first)
    assert len(sends) == 1 and publish._templates

    from celery import signals

    def other(**_):
        pass

    signals.before_task_publish.connect(other, weak=False)
    try:
        jobs = enqueue._prepare(
            [enqueue.JobRequest("analysis", {"batch_id": f"y{i}"}) for i in range(3)], get_settings()
        )
        publish.capture(jobs)
    finally:
        signals.before_task_publish.disconnect(other)
    assert len(sends) == 4  # every job through send_task while the other receiver listens

    monkeypatch.setattr(type(celery), "current_worker_task", property(lambda self: object()))
    assert not publish._templates_apply()
