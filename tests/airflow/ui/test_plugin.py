"""The plugin as Airflow loads it: through the entry point, light for task processes."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from fastapi import FastAPI


def test_the_entry_point_gives_the_plugin_with_its_app_and_views() -> None:
    (point,) = [p for p in entry_points(group="airflow.plugins") if p.name == "kcbus"]
    plugin_class = point.load()
    plugin = plugin_class()  # Airflow instantiates entry-point plugins
    (app,) = plugin.fastapi_apps
    assert isinstance(app["app"], FastAPI) and app["url_prefix"] == "/kcbus"
    assert plugin.fastapi_apps[0]["app"] is app["app"]  # one app per process
    routes = {view["url_route"]: view for view in plugin.external_views}
    assert routes["kcbus-messages"]["destination"] == "nav"
    assert routes["kcbus-task-messages"]["destination"] == "task_instance"


def test_importing_the_plugin_leaves_fastapi_app_and_ledger_unloaded() -> None:
    # Every Airflow task process imports plugins (for macros): it must not pay for the app.
    code = (
        "import sys, kcbus.airflow.ui.plugin as p; p.KcbusPlugin();"
        "print(sorted(m for m in ('kcbus.airflow.ui._api', 'kcbus.ledger', 'xoev')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"
