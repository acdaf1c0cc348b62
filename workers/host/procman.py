"""The process manager under `make run`: supervisord, driven over its XML-RPC interface.

supervisord does the process mechanics (fork/exec, process groups, signals, reaping, log files); the service host
asks it for each program's state and tells it to start or stop one, never waiting on the call (`wait=False`): the
supervisor loop must keep ticking while a Celery worker takes its time over a warm shutdown. The transport is
supervisord's own (`supervisor.xmlrpc.SupervisorTransport`, a UNIX socket), with a socket timeout added so a
supervisord that does not answer delays one tick, not the loop forever.
"""

from __future__ import annotations

import re
import socket
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

from supervisor.xmlrpc import Faults, SupervisorTransport, UnixStreamHTTPConnection

# supervisord's process states (supervisor.states.ProcessStates)
STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL, UNKNOWN = 0, 10, 20, 30, 40, 100, 200, 1000
UP = (STARTING, RUNNING, BACKOFF)  # supervisord is (trying to get) the process up
ENDED = (EXITED, FATAL)  # the process ended by itself (not stopped by a request)


@dataclass(frozen=True)
class ProcessInfo:
    """One program as supervisord reports it (`start` and `stop` are whole seconds, supervisord's clock)."""

    name: str  # group:name, what start/stop take
    program: str  # the name alone, what supervisord's log says
    state: int
    statename: str
    pid: int
    start: int
    stop: int
    exitstatus: int
    spawnerr: str

    @classmethod
    def of(cls, raw: dict[str, Any]) -> ProcessInfo:
        group, name = raw["group"], raw["name"]
        return cls(
            f"{group}:{name}",
            name,
            int(raw["state"]),
            raw["statename"],
            int(raw["pid"] or 0),
            int(raw["start"] or 0),
            int(raw["stop"] or 0),
            int(raw["exitstatus"] or 0),
            raw.get("spawnerr") or "",
        )


class _Connection(UnixStreamHTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost")
        self.socketfile, self._timeout = path, timeout

    def connect(self) -> None:  # supervisor's own connects without a timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self._timeout)
        self.sock.connect(self.socketfile)


class _Transport(SupervisorTransport):
    def __init__(self, url: str, timeout: float):
        super().__init__(None, None, url)
        if url.startswith("unix://"):
            self._get_connection = lambda: _Connection(url[len("unix://") :], timeout)


class ProcessManagerError(RuntimeError):
    """supervisord refused a request or could not be reached."""


class ShuttingDown(ProcessManagerError):
    """supervisord is stopping everything (Ctrl-C on `make run`): it answers nothing else until it exits, and
    nothing it stops now is a crash."""


class Supervisord:
    """A client of one supervisord. Not thread-safe: the supervisor loop is its only user."""

    def __init__(self, url: str, timeout: float = 3.0):
        self.url = url
        self._transport = _Transport(url, timeout)
        self._proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=self._transport)

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode == Faults.SHUTDOWN_STATE:
                raise ShuttingDown(f"supervisord at {self.url} is shutting down") from None
            raise
        except (OSError, xmlrpc.client.ProtocolError, EOFError, ValueError) as exc:
            self._transport.close()  # a fresh connection next time
            raise ProcessManagerError(f"supervisord at {self.url} did not answer {method}: {exc}") from exc

    def identification(self) -> str:
        """The `identifier` of its configuration: scripts/run makes one per `make run`."""
        return str(self._call("getIdentification"))

    def processes(self) -> dict[str, ProcessInfo]:
        """Every program by `group:name`."""
        return {p.name: p for p in (ProcessInfo.of(raw) for raw in self._call("getAllProcessInfo"))}

    def start(self, name: str) -> None:
        """Spawn it and return at once; already up is fine."""
        try:
            self._call("startProcess", name, False)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.ALREADY_STARTED:
                raise ProcessManagerError(f"supervisord would not start {name}: {fault.faultString}") from None

    def stop(self, name: str) -> None:
        """Send its stop signal and return at once (supervisord kills it after `stopwaitsecs`); not running is
        fine."""
        try:
            self._call("stopProcess", name, False)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.NOT_RUNNING:
                raise ProcessManagerError(f"supervisord would not stop {name}: {fault.faultString}") from None

    def exit_reason(self, program: str) -> str | None:
        """How `program` last ended, from supervisord's own log ("terminated by SIGKILL", "exit status 1"): its
        XML-RPC state keeps the exit code but not the signal."""
        try:
            tail = str(self._call("readLog", -16384, 0))
        except (xmlrpc.client.Fault, ProcessManagerError):
            return None
        found = re.findall(rf"exited: {re.escape(program)} \(([^)]*)\)", tail)
        return found[-1].split(";")[0] if found else None
