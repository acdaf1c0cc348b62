"""Run the local redis-server so that it stops last (the Procfile's `redis` process).

honcho stops every process at once; if Redis went first, workers could not acknowledge their last
jobs, hand back prefetched messages or withdraw their heartbeats. So redis-server runs in its own
session (out of reach of honcho's process-group signal), and on SIGTERM/SIGINT this wrapper waits
until the other clients have disconnected (at most 3.5 s, inside honcho's 5 s kill window), then
shuts Redis down cleanly, flushing the AOF.
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
    proc = subprocess.Popen(["redis-server", conf], start_new_session=True)
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
