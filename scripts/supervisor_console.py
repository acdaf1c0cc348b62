"""supervisord event listener of `make run`: every process's output on the console, each line prefixed with the
time and the process name, as honcho printed it.

supervisord writes each program's output to its own log file (`var/log/<name>.log`); with
`stdout_events_enabled` it also sends it here as PROCESS_LOG events (supervisord's documented extension point).
The protocol is three lines of code, written here on bytes: an event's `len` counts bytes, and
`supervisor.childutils` reads it as characters from a text stream, which desynchronises on the first non-ASCII
byte. Lines go to stderr, which supervisord passes to its console; stdout is the protocol channel. A partial
line waits for the rest of it.
"""

from __future__ import annotations

import signal
import sys
import time

WIDTH = 12


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # supervisord's stop, last of all: not a failure
    stdin, stdout, console = sys.stdin.buffer, sys.stdout.buffer, sys.stderr
    partial: dict[str, str] = {}
    while True:
        stdout.write(b"READY\n")
        stdout.flush()
        header = stdin.readline()
        if not header:
            return  # supervisord went away
        fields = dict(token.split(b":", 1) for token in header.split())
        payload = stdin.read(int(fields[b"len"])).decode("utf-8", "replace")
        if fields.get(b"eventname", b"").startswith(b"PROCESS_LOG"):
            meta_line, _, data = payload.partition("\n")
            meta = dict(token.split(":", 1) for token in meta_line.split() if ":" in token)
            name = meta.get("processname", "?")
            *lines, rest = (partial.pop(name, "") + data).split("\n")
            if rest:
                partial[name] = rest
            stamp = time.strftime("%H:%M:%S")
            console.write("".join(f"{stamp} {name:<{WIDTH}}| {line}\n" for line in lines))
            console.flush()
        stdout.write(b"RESULT 2\nOK")
        stdout.flush()


if __name__ == "__main__":
    main()
