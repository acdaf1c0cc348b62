
import pytest

from app.core.settings import Settings, SettingsError, settings_fields

from tests.servers import ROOT


def test_embedded_defaults_point_under_var(tmp_path):
    s = Settings.from_env({"VIGIL_VAR_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path}/vigil.db"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.broker_url == s.redis_url and s.result_backend == s.redis_url
    assert s.camera_root == tmp_path / "cameras"
    assert (s.port, s.flower_port) == (8000, 5555)
    assert s.api_key is None and s.is_sqlite


def test_environment_overrides_and_types():
    s = Settings.from_env({"VIGIL_PORT": "9001", "VIGIL_AUTH_READS": "yes", "VIGIL_API_KEY": "k",
                           "DATABASE_URL": "postgresql+psycopg2://u@h/db", "REDIS_URL": "redis://r:1/2",
                           "VIGIL_DETECTION_CONFIDENCE_THRESHOLD": "0.7"})
    assert s.port == 9001 and s.auth_reads is True and s.api_key == "k"
    assert s.broker_url == "redis://r:1/2" and not s.is_sqlite
    assert s.detection_confidence_threshold == pytest.approx(0.7)


@pytest.mark.parametrize("env", [{"VIGIL_PORT": "eighty"}, {"VIGIL_AUTH_READS": "maybe"}])
def test_bad_values_fail_loudly(env):
    with pytest.raises(SettingsError) as exc:
        Settings.from_env(env)
    assert next(iter(env)) in str(exc.value)


def test_public_view_masks_secrets():
    s = Settings.from_env({"VIGIL_API_KEY": "secret", "VIGIL_JWT_SECRET": "also"})
    pub = s.public()
    assert pub["VIGIL_API_KEY"] == "***" and pub["VIGIL_JWT_SECRET"] == "***"


def test_every_setting_is_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [f.metadata["env"] for f in settings_fields() if f"`{f.metadata['env']}`" not in doc]
    assert not missing, f"undocumented settings: {missing}"


def test_configuration_doc_table_is_current():
    from app.core.settings import settings_table

    doc = (ROOT / "docs" / "configuration.md").read_text()
    block = doc.split("<!-- settings:start -->", 1)[1].split("<!-- settings:end -->", 1)[0].strip()
    assert block == settings_table(), "docs/configuration.md is stale: run `vigil docs`"
