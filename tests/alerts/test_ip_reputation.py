"""IP reputation of the e-mail channel (platform API GET .../infrastructure/ip-reputation) against a real local DNS
server (dnslib) listing one address and not another, a real SMTP server (aiosmtpd) for the observed
address and outcomes, and an unreachable resolver (`unknown`, 200)."""

from __future__ import annotations

import pytest

from app import create_app
from app.alerts import notifications
from app.core.settings import Settings
from tests.alerts.helpers import P
from tests.alerts.prefs_helpers import Dnsbl
from tests.servers import SmtpServer, free_port
from workers.host.services.dnsbl_monitor import DnsblMonitor

URL = f"{P}/infrastructure/ip-reputation"
LISTED, CLEAN = "192.0.2.10", "192.0.2.20"


@pytest.fixture(scope="module")
def dnsbl():
    server = Dnsbl("dnsbl.test", listed=[LISTED], ptr={CLEAN: "relay.vigil.test", "127.0.0.1": "localhost.vigil.test"})
    server.start()
    yield server
    server.stop()


def _settings(redis_db, **changes):
    base = {"dnsbl_zones": "dnsbl.test", "dnsbl_timeout": 1.0, "dnsbl_interval": 1.0, **changes}
    return redis_db.settings(Settings.from_env(), **base)


def _report(settings, api_headers):
    r = create_app(settings).test_client().get(URL, headers=api_headers)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["success"] is True
    return {ip["ip_address"]: ip for ip in body["data"]["ips"]}, body["data"]


def test_a_listed_address_is_critical_and_a_clean_one_good(dnsbl, redis_db, api_headers):
    s = _settings(redis_db, smtp_source_ips=f"{LISTED},{CLEAN}", dnsbl_nameservers=dnsbl.nameserver)
    before, _ = _report(s, api_headers)  # nothing looked up yet: unknown, and no DNS on the request path
    assert {ip["status"] for ip in before.values()} == {"unknown"} and dnsbl.queries == []
    assert before[LISTED]["checks"][0]["error"] == "not checked yet"

    monitor = DnsblMonitor(s)
    assert monitor.attempt() and monitor.last["asked"] == 4  # 2 addresses x (1 zone + reverse DNS)
    ips, data = _report(s, api_headers)
    listed, clean = ips[LISTED], ips[CLEAN]
    assert listed["blacklists"] == ["dnsbl.test"] and listed["status"] == "critical"
    assert listed["reputation_score"] == 100 - s.dnsbl_penalty and listed["checks"][0]["codes"] == ["127.0.0.2"]
    assert clean["blacklists"] == [] and clean["status"] == "good" and clean["reputation_score"] == 100
    assert clean["provider"] == "relay.vigil.test" and listed["provider"] is None  # reverse DNS, else null
    assert listed["source"] == clean["source"] == "configured" and listed["daily_volume"] == 0
    assert data["zones"] == ["dnsbl.test"] and data["thresholds"]["critical_below"] == s.ip_reputation_critical

    asked = len(dnsbl.queries)
    assert monitor.attempt() and monitor.last["asked"] == 0 and len(dnsbl.queries) == asked  # cached for their TTL

    labelled = _report(_settings(redis_db, smtp_source_ips=CLEAN, smtp_provider="Our relay"), api_headers)[0]
    assert labelled[CLEAN]["provider"] == "Our relay"


def test_the_observed_sending_address_and_its_outcomes(dnsbl, redis_db, api_headers):
    smtp = SmtpServer().start()
    try:
        s = _settings(
            redis_db,
            dnsbl_nameservers=dnsbl.nameserver,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            smtp_starttls=False,
        )
        assert _report(s, api_headers)[0] == {}  # never sent: no address to report
        for _ in range(2):
            notifications.send_email(s, ["ops@example.com"], "hello", "body")
        assert len(smtp.mailbox.messages) == 2
    finally:
        smtp.stop()
    DnsblMonitor(s).attempt()
    observed = _report(s, api_headers)[0]["127.0.0.1"]
    assert observed["source"] == "observed" and observed["last_seen"]
    assert observed["daily_volume"] == 2 and observed["outcomes_24h"] == {"accepted": 2, "refused": 0, "deferred": 0}
    assert observed["provider"] == "localhost.vigil.test" and observed["status"] == "good"


def test_an_unreachable_resolver_is_unknown_not_an_error(redis_db, api_headers):
    s = _settings(redis_db, smtp_source_ips=LISTED, dnsbl_nameservers=f"127.0.0.1:{free_port()}", dnsbl_timeout=0.5)
    monitor = DnsblMonitor(s)
    assert monitor.attempt() and monitor.last["unknown"] == 1
    ip = _report(s, api_headers)[0][LISTED]
    assert ip["status"] == "unknown" and ip["blacklists"] == [] and ip["provider"] is None
    assert ip["checks"][0]["status"] == "unknown" and ip["checks"][0]["error"]


def test_no_zones_means_no_look_ups(redis_db, api_headers):
    s = _settings(redis_db, smtp_source_ips=CLEAN, dnsbl_zones="", smtp_provider="x")
    DnsblMonitor(s).attempt()
    ip = _report(s, api_headers)[0][CLEAN]
    assert ip["checks"] == [] and ip["status"] == "good"
