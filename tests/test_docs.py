"""The documentation site builds with no broken link or missing page (`mkdocs build --strict`), and its
generated parts are there: the settings reference names every setting the code reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fruitflow_pipeline.settings_reference import SETTINGS

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly_with_the_generated_settings_reference(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    settings_page = (tmp_path / "site" / "deploy" / "settings" / "index.html").read_text()
    assert all(setting.variable in settings_page for setting in SETTINGS)
