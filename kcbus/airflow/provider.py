"""Provider metadata: how Airflow discovers kcbus's connection type, hook and trigger.

Registered through the ``apache_airflow_provider`` entry point in ``pyproject.toml``. Airflow
imports this module whenever it initialises its providers manager (in every component), so it
imports nothing: it returns plain data.
"""

from __future__ import annotations

__all__ = ["get_provider_info"]

_INTEGRATION = "kcbus"


def get_provider_info() -> dict[str, object]:
    """Return the provider info dict (schema: ``airflow/provider_info.schema.json``)."""
    return {
        # Must equal the distribution name, or Airflow refuses the provider.
        "package-name": "kcbus",
        "name": "kcbus",
        "description": (
            "XÖV/XML integration bus: transports (file drop, SFTP, HTTPS, AMQP) as Airflow "
            "Connections, an event trigger on AMQP/kombu queues for AssetWatcher."
        ),
        "integrations": [{"integration-name": _INTEGRATION, "tags": ["protocol"]}],
        "hooks": [
            {"integration-name": _INTEGRATION, "python-modules": ["kcbus.airflow.hook"]},
        ],
        "triggers": [
            {"integration-name": _INTEGRATION, "python-modules": ["kcbus.airflow.triggers"]},
        ],
        "connection-types": [
            {
                "connection-type": "kcbus",
                "hook-class-name": "kcbus.airflow.hook.KcbusTransportHook",
                "hook-name": "kcbus transport",
                # Form fields for the Airflow 3 connection editor; stored in ``extra``.
                "conn-fields": {
                    "transport": {
                        "label": "Transport",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["file", "sftp", "https", "amqp", "memory", None],
                        },
                        "description": "URL scheme of the kcbus adapter",
                    },
                    "url": {
                        "label": "Adapter URL",
                        "schema": {"type": ["string", "null"]},
                        "description": (
                            "Full adapter URL instead of host/port/schema; login and password "
                            "are added from the connection"
                        ),
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": [],
                    "relabeling": {"schema": "Path / vhost"},
                    "placeholders": {"host": "partner.example.org"},
                },
            }
        ],
    }
