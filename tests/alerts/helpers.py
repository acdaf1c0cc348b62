"""What the notification test modules share: sending a notification job through the API."""

from __future__ import annotations

from typing import Any

P = "/api/v1/platform/system"


def send_notification(client: Any, api_headers: dict[str, str], payload: dict, priority: str = "normal") -> str:
    """POST a `notification` job as a client of the API would; the job id, once the API accepted it."""
    r = client.post(
        f"{P}/jobs", json={"task": "notification", "payload": payload, "priority": priority}, headers=api_headers
    )
    assert r.status_code == 202, r.get_json()
    return r.get_json()["data"]["job_id"]
