"""Run the local redis-server so that it stops last and cleanly (the Procfile's `redis` process).

Under `make run` supervisord already stops Redis last: it is a group of its own with a lower
priority, stopped only once every Vigil process has exited (workers need Redis to acknowledge
their last jobs, hand back prefetched messages and withdraw their heartbeats). This wrapper adds
the rest: on SIGTERM/SIGINT it waits until the other clients have disconnected (at most 3.5 s,
for a Redis shared with clients outside this run), then shuts Redis down cleanly, flushing the
AOF. redis-server stays in the wrapper's process group, so supervisord's kill after
`stopwaitsecs` reaches it too.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import redis


def main() -> int:
    from app.core.settings import get_settings

    conf = str(get_settings().var_dir / "redis" / "redis.conf")  # written by `vigil redis-conf`
    port = 6379
    for line in open(conf):
        if line.startswith("port "):
            port = int(line.split()[1])
    proc = subprocess.Popen(["redis-server", conf])
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            try:
                if len(client.client_list()) <= 1:
                    break
            except redis.RedisError:
                break
            time.sleep(0.1)
        proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            return proc.wait()
        except InterruptedError:
            continue


if __name__ == "__main__":
    sys.exit(main())
