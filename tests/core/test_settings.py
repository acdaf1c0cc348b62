import pickle
from pathlib import Path

import pytest

from app.core.settings import Settings, SettingsError, replace, settings_fields
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
    s = Settings.from_env(
        {
            "VIGIL_PORT": "9001",
            "VIGIL_AUTH_READS": "yes",
            "VIGIL_API_KEY": "k",
            "DATABASE_URL": "postgresql+psycopg2://u@h/db",
            "REDIS_URL": "redis://r:1/2",
            "VIGIL_DETECTION_CONFIDENCE_THRESHOLD": "0.7",
        }
    )
    assert s.port == 9001 and s.auth_reads is True and s.api_key == "k"
    assert s.broker_url == "redis://r:1/2" and not s.is_sqlite
    assert s.detection_confidence_threshold == pytest.approx(0.7)


@pytest.mark.parametrize(
    "env",
    [
        {"VIGIL_PORT": "eighty"},
        {"VIGIL_AUTH_READS": "maybe"},
        {"VIGIL_HEARTBEAT_INTERVAL": "2s"},
        {"CELERY_BROKER_URL": "redis://{nope}/0"},
    ],
)
def test_bad_values_fail_loudly(env):
    with pytest.raises(SettingsError) as exc:
        Settings.from_env(env)
    ((name, value),) = env.items()
    assert f"{name}={value!r}" in str(exc.value)


def test_a_bad_value_names_its_variable_and_value_and_not_a_secret():
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({"VIGIL_SMTP_PORT": "smtp", "VIGIL_LOG_DB": "2", "VIGIL_PORT": "9001"})
    message = str(exc.value)
    assert "VIGIL_SMTP_PORT='smtp'" in message and "VIGIL_LOG_DB='2'" in message and "VIGIL_PORT" not in message
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({"VIGIL_API_KEY": "sec{ret"})
    assert "VIGIL_API_KEY" in str(exc.value) and "sec{ret" not in str(exc.value)
    with pytest.raises(SettingsError, match="VIGIL_PORT='x'"):
        replace(Settings.from_env({}), port="x")  # derived settings are validated too
    with pytest.raises(TypeError, match="no_such_setting"):
        Settings.from_env({}, no_such_setting=1)


def test_template_defaults_follow_the_settings_they_name(tmp_path):
    s = Settings.from_env({"VIGIL_VAR_DIR": str(tmp_path), "REDIS_URL": "redis://r:1/2"})
    assert s.database_url == f"sqlite:///{tmp_path}/vigil.db"
    assert (s.camera_root, s.thumbnail_dir, s.clips_dir, s.export_dir, s.metrics_dir) == tuple(
        tmp_path / d for d in ("cameras", "thumbnails", "clips", "exports", "metrics")
    )
    assert s.broker_url == s.result_backend == "redis://r:1/2"
    # A keyword override feeds the templates after it; it is never a template itself.
    s = Settings.from_env({}, var_dir=tmp_path / "v", redis_url="redis://o/1", result_backend="redis://{x}")
    assert s.camera_root == tmp_path / "v" / "cameras" and s.broker_url == "redis://o/1"
    assert s.result_backend == "redis://{x}"
    # The templates see parsed values: a relative var dir is made absolute before it is filled in.
    s = Settings.from_env({"VIGIL_VAR_DIR": "rel", "VIGIL_CLIPS_DIR": "{var_dir}/c", "VIGIL_EXPORT_DIR": "~/e"})
    assert s.clips_dir == Path("rel").absolute() / "c" and s.export_dir == Path("~/e").expanduser()
    s = Settings.from_env({"DATABASE_URL": "postgresql://u:p{{w}}@h/db"})
    assert s.database_url == "postgresql://u:p{w}@h/db"
    with pytest.raises(SettingsError, match="VIGIL_CAMERA_ROOT.*metrics_dir"):  # only earlier settings
        Settings.from_env({"VIGIL_CAMERA_ROOT": "{metrics_dir}/c"})


def test_settings_are_immutable_hashable_and_picklable():
    s = Settings.from_env({"VIGIL_API_KEY": "k", "VIGIL_AUTH_READS": "", "VIGIL_JWT_SECRET": ""})
    assert s.auth_reads is False and s.jwt_secret is None
    with pytest.raises(ValueError):
        s.port = 1
    assert hash(s) == hash(Settings.from_env({"VIGIL_API_KEY": "k"})) and {s: 1}
    assert pickle.loads(pickle.dumps(s)) == s
    derived = replace(s, port=1, camera_root="cams")
    assert (derived.port, derived.camera_root, derived.api_key) == (1, Path("cams").absolute(), "k")
    assert derived.database_url == s.database_url and s.port == 8000
    assert "'k'" not in repr(s)


def test_public_view_masks_secrets():
    s = Settings.from_env({"VIGIL_API_KEY": "secret", "VIGIL_JWT_SECRET": "also"})
    pub = s.public()
    assert pub["VIGIL_API_KEY"] == "***" and pub["VIGIL_JWT_SECRET"] == "***"


def test_every_setting_is_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [f.env for f in settings_fields() if f"`{f.env}`" not in doc]
    assert not missing, f"undocumented settings: {missing}"


def test_configuration_doc_table_is_current():
    from app.core.settings import settings_table

    doc = (ROOT / "docs" / "configuration.md").read_text()
    block = doc.split("<!-- settings:start -->", 1)[1].split("<!-- settings:end -->", 1)[0].strip()
    assert block == settings_table(), "docs/configuration.md is stale: run `vigil docs`"
