"""Settings of the operator's view, read from Airflow's configuration (section ``[kcbus]``).

Like every Airflow option, each can also be given as an environment variable
``AIRFLOW__KCBUS__<KEY>``.

==================  ============================================================================
key                 meaning (default)
==================  ============================================================================
``config``          the kcbus partner/route config (file or folder, ``${VAR}`` expanded like the
                    DAG factory does, ``kcbus.airflow.settings``); gives the ledger URL and the
                    flows. Default: ``KCBUS_CONFIG`` / ``$AIRFLOW_HOME/config`` if it exists
                    (where the DAGs read it); without any, the flows come from the ledger.
``ledger_url``      SQLAlchemy URL of the ledger, overriding ``bus.ledger`` of the config
                    (then ``KCBUS_LEDGER``, then the embedded default, as everywhere in kcbus).
``dag_id_template`` how a flow's DAG is named, ``{flow}`` replaced by the route name
                    (``kcbus_{flow}``). Permission to re-send is checked on that DAG.
``ui_show_content`` empty (the default) or ``False``: the page never shows message content.
                    A comma-separated list of flows, or ``*`` / ``True`` for all: operators with
                    edit access may look at the content of *full-inspection* messages of those
                    flows, each look recorded in the message's history with user and reason.
                    End-to-end content is never shown, whatever this says (the bus cannot read
                    it).
==================  ============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_DAG_ID_TEMPLATE", "UiSettings", "parse_content_flows"]

DEFAULT_DAG_ID_TEMPLATE = "kcbus_{flow}"
_SECTION = "kcbus"


@dataclass(frozen=True)
class UiSettings:
    config: Path | None
    ledger_url: str | None = None
    dag_id_template: str = DEFAULT_DAG_ID_TEMPLATE
    #: Flows whose full-inspection content may be shown; ``"*"`` in it: every flow.
    content_flows: frozenset[str] = frozenset()

    def shows_content(self, flow: str | None) -> bool:
        return "*" in self.content_flows or (flow is not None and flow in self.content_flows)

    @classmethod
    def from_airflow(cls) -> UiSettings:
        """Read ``[kcbus]`` from Airflow's configuration (lazily: only the API server asks)."""
        from airflow.configuration import conf

        from kcbus.airflow.settings import config_path

        given = conf.get(_SECTION, "config", fallback="") or ""
        config: Path | None = Path(given).expanduser() if given else config_path()
        if not given and config is not None and not config.exists():
            config = None
        return cls(
            config=config,
            ledger_url=conf.get(_SECTION, "ledger_url", fallback="") or None,
            dag_id_template=conf.get(
                _SECTION, "dag_id_template", fallback=DEFAULT_DAG_ID_TEMPLATE
            )
            or DEFAULT_DAG_ID_TEMPLATE,
            content_flows=parse_content_flows(
                conf.get(_SECTION, "ui_show_content", fallback="") or ""
            ),
        )


def parse_content_flows(value: str) -> frozenset[str]:
    """``ui_show_content`` as a set of flows (``*``: all); unset/false: none."""
    text = value.strip()
    if text.lower() in ("", "false", "no", "off", "0"):
        return frozenset()
    if text.lower() in ("*", "true", "yes", "on", "1"):
        return frozenset({"*"})
    return frozenset(part.strip() for part in text.split(",") if part.strip())
