"""Flower reads this file from the working directory (`celery -A workers flower`, the Procfile's line):
same port and bind address settings as the rest (FLOWER_PORT, VIGIL_HOST), and a login.

Flower shows every worker and task and its buttons shut down or resize pools, so it never runs open.
Unless Flower's own authentication is configured in its environment, it asks for HTTP basic auth
with user `vigil` and the API key as the password: VIGIL_API_KEY, or the key `make run` keeps in
`var/api_key`. The same credentials open its API (`curl -u vigil:$KEY`), which is what the pool
buttons call, so FLOWER_UNAUTHENTICATED_API is never needed. Instead of the API key:

* `FLOWER_BASIC_AUTH=user:password[,user2:password2]`: those logins (Flower reads the variable);
* OAuth: `FLOWER_AUTH` (the e-mail addresses allowed, a regex), `FLOWER_AUTH_PROVIDER` (e.g.
  `flower.views.auth.GithubLoginHandler`), `FLOWER_OAUTH2_KEY`, `FLOWER_OAUTH2_SECRET`,
  `FLOWER_OAUTH2_REDIRECT_URI`: Flower's login page, and no basic auth (Flower would want both).

Without any of these Flower refuses to start (the message says what to set). Names starting with `_`
are not Flower options: Flower takes every other global of this file as one.
"""

import os as _os
from pathlib import Path as _Path

from app.core.settings import get_settings as _get_settings

_settings = _get_settings()
_USER = "vigil"

port = _settings.flower_port
address = _settings.host
# Flower's task list is in memory; Vigil's job registry (/api/v1/platform/system/...) is the
# durable record. Keep enough tasks to be useful without unbounded growth.
max_tasks = 10000
# Flower's default is to broadcast `enable_events` to every worker every few seconds, which turned
# task events on whatever VIGIL_TASK_EVENTS said (three events per job published by every worker:
# bench P13 measured that cost on the detection pool). Its per-task view follows the setting instead.
enable_events = _settings.task_events


def _api_key() -> str | None:
    """VIGIL_API_KEY, else the key `vigil api-key` stored under var/ (never created here: the API must
    accept the same key, so only `vigil api-key` makes one)."""
    if _settings.api_key:
        return _settings.api_key
    stored = _Path(_settings.var_dir) / "api_key"
    key = stored.read_text().strip() if stored.is_file() else ""
    return key or None


if _os.environ.get("FLOWER_AUTH") or _os.environ.get("FLOWER_BASIC_AUTH"):
    pass  # Flower's own authentication, read by Flower from its environment
elif (_key := _api_key()) is not None:
    basic_auth = [f"{_USER}:{_key}"]
else:
    raise SystemExit(
        "Flower needs a login and none is configured: set VIGIL_API_KEY (or run `vigil api-key`, "
        "which `make run` does), FLOWER_BASIC_AUTH=user:password, or OAuth (FLOWER_AUTH, "
        "FLOWER_AUTH_PROVIDER, FLOWER_OAUTH2_*). See docs/operations.md, 'Flower'."
    )
