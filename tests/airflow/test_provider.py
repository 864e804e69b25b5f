"""Airflow discovers kcbus's provider: its connection type, hook and trigger module."""

from __future__ import annotations

import importlib


def test_provider_is_registered_through_the_entry_point() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "kcbus" in manager.providers
    info = manager.providers["kcbus"].data
    assert info["connection-types"][0]["hook-class-name"] == "kcbus.airflow.hook.KcbusTransportHook"
    hook = manager.hooks["kcbus"]
    assert hook is not None
    assert hook.hook_class_name == "kcbus.airflow.hook.KcbusTransportHook"


def test_every_module_named_in_the_provider_info_imports() -> None:
    from kcbus.airflow.provider import get_provider_info

    info = get_provider_info()
    modules: list[str] = []
    for section in ("hooks", "triggers"):
        entries = info[section]
        assert isinstance(entries, list)
        for entry in entries:
            modules.extend(entry["python-modules"])
    assert modules
    for name in modules:
        importlib.import_module(name)
