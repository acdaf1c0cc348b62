"""`vigil` command: the set-up steps `make run` and containers share."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

from app.core.settings import get_settings


def cmd_migrate(_args: argparse.Namespace) -> int:
    from app.core.migrate import upgrade

    settings = get_settings()
    for directory in (
        settings.var_dir,
        settings.camera_root,
        settings.thumbnail_dir,
        settings.clips_dir,
        settings.export_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    print(f"database migrated: {settings.database_url.split('@')[-1]}")
    return 0


def cmd_settings(_args: argparse.Namespace) -> int:
    print(json.dumps(get_settings().public(), indent=2, default=str))
    return 0


def cmd_api_key(_args: argparse.Namespace) -> int:
    """Print the API key: VIGIL_API_KEY when set, else the one stored under var/ (created once)."""
    settings = get_settings()
    if settings.api_key:
        print(settings.api_key)
        return 0
    path = Path(settings.var_dir) / "api_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    print(path.read_text().strip())
    return 0


def cmd_redis_ping(_args: argparse.Namespace) -> int:
    import redis

    try:
        redis.Redis.from_url(get_settings().redis_url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return 1
    return 0


def cmd_redis_conf(_args: argparse.Namespace) -> int:
    """Write var/redis/redis.conf for a local Redis on REDIS_URL's port; exit 2 if REDIS_URL is remote.

    AOF with fsync every second: the broker's messages and the job registry survive a restart, and
    a crash loses at most a second of writes (docs/architecture.md, "Durability").
    """
    from urllib.parse import urlparse

    settings = get_settings()
    url = urlparse(settings.redis_url)
    if (url.hostname or "localhost") not in ("localhost", "127.0.0.1", "::1"):
        return 2
    data = Path(settings.var_dir) / "redis"
    data.mkdir(parents=True, exist_ok=True)
    conf = data / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                f"port {url.port or 6379}",
                "bind 127.0.0.1 ::1",
                f"dir {data}",
                "appendonly yes",
                f"appendfsync {os.environ.get('VIGIL_REDIS_APPENDFSYNC', 'everysec')}",
                'save ""',
                "daemonize no",
                f"pidfile {data / 'redis.pid'}",
                "protected-mode yes",
                "loglevel notice",
            ]
        )
        + "\n"
    )
    print(conf)
    return 0


def cmd_docs(_args: argparse.Namespace) -> int:
    """Rewrite the generated settings table in docs/configuration.md."""
    from app.core.settings import settings_table

    doc = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    text = doc.read_text()
    start, end = "<!-- settings:start -->", "<!-- settings:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    doc.write_text(f"{head}{start}\n{settings_table()}\n{end}{tail}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vigil", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create var/ directories and upgrade the database").set_defaults(fn=cmd_migrate)
    sub.add_parser("settings", help="print effective settings (secrets masked)").set_defaults(fn=cmd_settings)
    sub.add_parser("api-key", help="print (creating if needed) the local API key").set_defaults(fn=cmd_api_key)
    sub.add_parser("redis-conf", help="write the local Redis config; exit 2 if REDIS_URL is remote").set_defaults(
        fn=cmd_redis_conf
    )
    sub.add_parser("docs", help="regenerate the settings table in docs/configuration.md").set_defaults(fn=cmd_docs)
    sub.add_parser("redis-ping", help="exit 0 when REDIS_URL answers").set_defaults(fn=cmd_redis_ping)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
