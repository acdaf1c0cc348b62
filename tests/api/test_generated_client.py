"""A client generated from the running API's own `/api/openapi.json` (openapi-python-client, a
maintained generator) works: it enqueues a job, pages the queue, pauses and resumes it, retries a
failed job and reads a rule, with the typed models it generated from the document's schemas.

This proves the document usable, not only valid: every request the client builds from it is
accepted, and every answer parses into the model the document promised.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.api.stack import live_stack
from tests.helpers import API_KEY
from tests.servers import wait_for

PACKAGE = "vigil_generated_client"


@pytest.fixture(scope="module")
def stack(pg, redis_databases, tmp_path_factory):
    with live_stack(pg, redis_databases, tmp_path_factory.mktemp("client"), ("analysis_worker",)) as s:
        yield s


@pytest.fixture(scope="module")
def client_module(stack, tmp_path_factory):
    """The client package, generated from the stack's document and importable."""
    out = tmp_path_factory.mktemp("generated")
    document = out / "openapi.json"
    document.write_text(stack.get("/api/openapi.json").text)
    config = out / "config.yaml"
    config.write_text(
        f"project_name_override: vigil-generated-client\npackage_name_override: {PACKAGE}\npost_hooks: []\n"
    )
    generator = Path(sys.executable).with_name("openapi-python-client")
    run = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(document),
            "--meta",
            "none",
            "--config",
            str(config),
            "--output-path",
            str(out / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=out,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # The generator cannot type binary image answers (the detection image endpoints); nothing else may warn.
    warnings = [block for block in (run.stdout + run.stderr).split("WARNING parsing ")[1:]]
    assert all("Unsupported content_type image/" in w for w in warnings), warnings
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _api(package: str, module: str):
    return importlib.import_module(f"{PACKAGE}.api.{package}.{module}")


def test_generated_client_drives_the_api(stack, client_module):
    models = importlib.import_module(f"{PACKAGE}.models")
    client = client_module.AuthenticatedClient(
        base_url=stack.url, token=API_KEY, prefix="", auth_header_name="X-API-Key", raise_on_unexpected_status=True
    )
    enqueue = _api("queues", "queues_enqueue_job_post")
    page = _api("queues", "queues_list_queue_jobs_get")
    pause = _api("queues", "queues_pause_queue_post")
    resume = _api("queues", "queues_resume_queue_post")
    retry = _api("queues", "queues_retry_job_post")
    get_job = _api("queues", "queues_get_job_get")

    # Enqueue: a batch nobody closed, so the analysis job fails and can be retried.
    pause.sync(client=client, queue_name="analysis")
    answer = enqueue.sync(
        client=client,
        body=models.EnqueueAnalysisJob(
            task="analysis",
            payload=models.AnalysisPayload(batch_id=f"missing-{uuid.uuid4().hex[:8]}"),
            idempotency_key=f"client-{uuid.uuid4().hex}",
        ),
    )
    assert isinstance(answer, models.EnqueuedEnvelope) and answer.data.created is True
    job_id = answer.data.job_id
    assert answer.data.queue == "analysis"

    # Page the queue while it is paused: the job waits there.
    waiting = page.sync(
        client=client, queue_name="analysis", status=models.QueuesListQueueJobsGetStatus.WAITING, limit=10, offset=0
    )
    assert isinstance(waiting, models.JobPageEnvelope)
    assert job_id in [j.id for j in waiting.data.jobs] and waiting.data.pagination.limit == 10
    paused = {q.name: q for q in _api("queues", "queues_list_queues_get").sync(client=client).data.queues}
    assert paused["analysis"].paused is True

    # Resume: the worker takes it and it fails (no such batch).
    resumed = resume.sync(client=client, queue_name="analysis")
    assert resumed.data.status == "active"
    wait_for(
        lambda: get_job.sync(client=client, job_id=job_id).data.status.value == "failed", 30, what="the job to fail"
    )
    failed = page.sync(client=client, queue_name="analysis", status=models.QueuesListQueueJobsGetStatus.FAILED)
    assert job_id in [j.id for j in failed.data.jobs]

    # Retry it: queued again, same id.
    retried = retry.sync(client=client, job_id=job_id)
    assert isinstance(retried, models.JobRetriedEnvelope) and retried.data.job_id == job_id

    # Read a rule (created through the client too).
    create = _api("alerts", "alerts_create_rule_post")
    read = _api("alerts", "alerts_get_rule_get")
    rule = create.sync(
        client=client,
        body=models.RuleCreate(
            name="generated client",
            severity=models.RuleCreateSeverity.HIGH,
            risk_threshold=70,
            channels=[models.RuleCreateChannelsItem.WEBHOOK],
        ),
    )
    assert rule is not None and rule.id
    again = read.sync(client=client, rule_id=rule.id)
    assert again.id == rule.id and again.name == "generated client" and again.risk_threshold == 70

    # An error parses into the family's error model.
    missing = get_job.sync_detailed(client=client_module.Client(base_url=stack.url), job_id="no-such-job")
    assert missing.status_code == 404 and missing.parsed.error.code == "job_not_found"
