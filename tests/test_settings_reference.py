"""The deployment settings as a team reads and sets them: one table, generated from the settings
code, names every setting ``Settings.from_env`` reads; each comes from its FRUITFLOW_* variable
or, unset there, from the [fruitflow] section of Airflow's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruitflow_pipeline.settings import DeploymentValues, SettingError, Settings, Target
from fruitflow_pipeline.settings_reference import SETTINGS, airflow_configuration_options, settings_markdown

ROOT = Path(__file__).resolve().parents[1]


class RecordingEnv(dict):
    """An empty environment that notes every variable asked for."""

    def __init__(self):
        super().__init__()
        self.asked: set[str] = set()

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def test_the_table_names_exactly_the_settings_the_code_reads():
    env = RecordingEnv()
    Settings.from_env(env, option=lambda name: None)
    assert {setting.variable for setting in SETTINGS} == {name for name in env.asked if name.startswith("FRUITFLOW_")}


def test_the_settings_page_shows_the_generated_table():
    """docs/hooks.py puts settings_markdown() where the page's marker is; the site's build (tests/test_docs.py)
    checks the rendered page."""
    from docs.hooks import SETTINGS_REFERENCE, on_page_markdown

    page = (ROOT / "docs" / "deploy" / "settings.md").read_text()
    assert SETTINGS_REFERENCE in page and settings_markdown() in on_page_markdown(page, page=None)


def test_an_airflow_option_sets_what_no_variable_sets_and_a_variable_wins():
    options = {"results_uri": "s3://team-bucket/results", "images_uri": "s3://team-bucket/images", "keep_runs": "3"}
    settings = Settings.from_env({"FRUITFLOW_IMAGES_URI": "s3://env-bucket/images"}, option=options.get)
    assert settings.results_uri == "s3://team-bucket/results"
    assert settings.images_uri == "s3://env-bucket/images"
    assert settings.retention.keep_runs == 3


def test_a_variable_set_empty_still_wins_over_the_option():
    values = DeploymentValues({"FRUITFLOW_EMR_SUBNET_ID": ""}, {"emr_subnet_id": "subnet-1"}.get)
    assert values["FRUITFLOW_EMR_SUBNET_ID"] == ""
    assert "FRUITFLOW_EMR_LOG_URI" not in values


def test_a_bad_option_is_refused_with_the_settings_name():
    with pytest.raises(SettingError, match="FRUITFLOW_TARGET='yarn'"):
        Settings.from_env({}, option={"target": "yarn"}.get)


def test_airflows_own_configuration_is_read_from_its_environment_variables(monkeypatch):
    monkeypatch.setenv("AIRFLOW__FRUITFLOW__TARGET", "local")
    monkeypatch.setenv("AIRFLOW__FRUITFLOW__SPARK_DRIVER_MEMORY", "2g")
    settings = Settings.from_env({})
    assert (settings.target, settings.local.driver_memory) == (Target.LOCAL, "2g")


def test_the_bundles_options_are_settings_in_the_fruitflow_section():
    names = {f"fruitflow.{setting.option}" for setting in SETTINGS}
    options = airflow_configuration_options()
    assert options["fruitflow.target"] == "emr"
    assert set(options) <= names and {"fruitflow.images_uri", "fruitflow.results_uri"} <= set(options)
