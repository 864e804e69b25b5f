"""xoev — sans-IO XÖV message model: bytes in, typed values out.

No network, no Airflow, no kombu, no clocks (time comes in as a parameter).
"""

from __future__ import annotations

from xoev._errors import ConfigurationError, KcbusError, PartnerFault, TransientFault

__all__ = ["ConfigurationError", "KcbusError", "PartnerFault", "TransientFault"]
