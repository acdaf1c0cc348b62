"""`python -m workers.host` (the Procfile's `watcher`): the service host with every in-process
service, under the supervisor. Running the package's `__main__` keeps every class defined once, in
its own module (running a module that others import made two `Pending` classes, and a 500)."""

from __future__ import annotations

import logging
import time

from app.core.settings import Settings, get_settings
from app.jobs.publish import declare_queues
from app.observability import metrics
from app.observability.logging_setup import configure_logging
from workers.host.service import Service
from workers.host.services.batch_closer import BatchCloser
from workers.host.services.dnsbl_monitor import DnsblMonitor
from workers.host.services.gpu_monitor import GpuMonitor
from workers.host.services.held_releaser import HeldReleaser
from workers.host.services.infra_monitor import InfraMonitor
from workers.host.services.live_monitor import LiveMonitor
from workers.host.services.monitoring import MonitoringService
from workers.host.services.performance_monitor import PerformanceMonitor
from workers.host.services.registry_archiver import RegistryArchiver
from workers.host.services.watcher import FileWatcher
from workers.host.supervisor import ServiceHost

log = logging.getLogger("workers.host")


def build_services(settings: Settings) -> list[Service]:
    return [
        FileWatcher(settings),
        BatchCloser(settings),
        GpuMonitor(settings),
        PerformanceMonitor(settings),
        InfraMonitor(settings),
        LiveMonitor(settings),
        DnsblMonitor(settings),
        HeldReleaser(settings),
        RegistryArchiver(settings),
        MonitoringService(settings),
    ]


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, "watcher", settings)
    metrics.prepare(settings)
    delay = 0.5
    while True:  # the broker may come up after us (everything starts at once)
        try:
            declare_queues()
            break
        except Exception as exc:
            log.warning("broker not reachable yet (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10)
    ServiceHost(build_services(settings), settings).run_forever()


if __name__ == "__main__":
    main()
