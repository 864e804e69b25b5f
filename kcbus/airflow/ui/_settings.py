"""Settings of the operator's view, read from Airflow's configuration (section ``[kcbus]``).

Like every Airflow option, each can also be given as an environment variable
``AIRFLOW__KCBUS__<KEY>``.

==================  ============================================================================
key                 meaning (default)
==================  ============================================================================
``config``          the kcbus partner/route config file (``kcbus.config.load``); gives the ledger
                    URL, the flows and each flow's inspection mode. Required.
``ledger_url``      SQLAlchemy URL of the ledger, overriding ``bus.ledger`` of the config.
``dag_id_template`` how a flow's DAG is named, ``{flow}`` replaced by the route name
                    (``kcbus_{flow}``). Permission to re-send is checked on that DAG.
``ui_show_content`` ``False``: the page never shows message content. ``True``: operators with
                    edit access may look at the content of *full-inspection* messages, each look
                    recorded in the ledger with user and reason. End-to-end content is never
                    shown, whatever this says (the bus cannot read it).
==================  ============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_DAG_ID_TEMPLATE", "UiSettings"]

DEFAULT_DAG_ID_TEMPLATE = "kcbus_{flow}"
_SECTION = "kcbus"


@dataclass(frozen=True)
class UiSettings:
    config: Path | None
    ledger_url: str | None = None
    dag_id_template: str = DEFAULT_DAG_ID_TEMPLATE
    show_content: bool = False

    @classmethod
    def from_airflow(cls) -> UiSettings:
        """Read ``[kcbus]`` from Airflow's configuration (lazily: only the API server asks)."""
        from airflow.configuration import conf

        config = conf.get(_SECTION, "config", fallback="") or ""
        return cls(
            config=Path(config).expanduser() if config else None,
            ledger_url=conf.get(_SECTION, "ledger_url", fallback="") or None,
            dag_id_template=conf.get(
                _SECTION, "dag_id_template", fallback=DEFAULT_DAG_ID_TEMPLATE
            )
            or DEFAULT_DAG_ID_TEMPLATE,
            show_content=conf.getboolean(_SECTION, "ui_show_content", fallback=False),
        )
