"""docker-compose.yml must run the same processes as the Procfile, configured by known settings."""

import yaml

from app.core.settings import Settings, settings_fields
from tests.servers import ROOT, procfile

INFRA = {"redis", "postgres", "migrate"}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_procfile_process_is_a_compose_service_with_the_same_command():
    procs = procfile()
    services = _compose()["services"]
    for name, command in procs.items():
        if name == "redis":  # compose runs the redis image instead, with the same persistence
            continue
        assert name in services, f"Procfile process {name} missing from docker-compose.yml"
        assert services[name]["command"] == command, f"{name}: compose and Procfile commands differ"
    assert set(services) - INFRA == set(procs) - {"redis"}


def test_compose_environment_uses_known_settings_and_default_ports():
    compose = _compose()
    known = {f.metadata["env"] for f in settings_fields()}
    defaults = Settings.from_env({})
    for name, service in compose["services"].items():
        if name in INFRA - {"migrate"}:
            continue
        env = service["environment"]
        unknown = set(env) - known
        assert not unknown, f"{name}: environment names no Vigil setting: {unknown}"
        assert env["VIGIL_PORT"] == str(defaults.port) and env["FLOWER_PORT"] == str(defaults.flower_port)
    assert compose["services"]["api"]["ports"] == [f"{defaults.port}:{defaults.port}"]
    assert compose["services"]["flower"]["ports"] == [
        f"${{VIGIL_FLOWER_BIND:-127.0.0.1}}:{defaults.flower_port}:{defaults.flower_port}"
    ]


def test_api_health_check_uses_ready_and_redis_keeps_an_aof():
    services = _compose()["services"]
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])
    assert "--appendonly yes" in services["redis"]["command"]
    deps = services["api"]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
