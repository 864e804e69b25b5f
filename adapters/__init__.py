"""adapters — transports (file drop, SFTP, HTTPS, AMQP) and envelope sealing. No Airflow."""

from __future__ import annotations

__all__: list[str] = []
