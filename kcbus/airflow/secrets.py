"""The keystore passphrase for Airflow workers, from Airflow's secrets.

A task process has no terminal to prompt on, so :func:`keystore_passphrase` gives the bus a
callable that looks the passphrase up in this order, first match wins:

1. ``KCBUS_KEYSTORE_PASSPHRASE`` — the environment, as everywhere in kcbus;
2. ``KCBUS_KEYSTORE_PASSPHRASE_FILE`` — a file readable by its owner only (systemd credential,
   Docker or Kubernetes secret); setting both 1 and 2 is an error;
3. the password of the Airflow Connection ``kcbus_keystore``;
4. the Airflow Variable ``kcbus_keystore_passphrase``.

Airflow resolves 3 and 4 through its configured secrets backend (HashiCorp Vault, AWS Secrets
Manager, …), then ``AIRFLOW_CONN_KCBUS_KEYSTORE`` / ``AIRFLOW_VAR_KCBUS_KEYSTORE_PASSPHRASE``,
then its metadata database. Whatever source the passphrase comes from, it is masked in task
logs (Airflow's ``mask_secret``: the task process and its supervisor). The lookup runs only
when the keystore first needs a private key (opening or sealing), never when a DAG file is
parsed, and once per process (the keystore keeps the derived key).

Errors: no source set → :class:`~adapters.envelope.KeystoreError` naming all four; the
Connection exists without a password → the same (an operator must fix it either way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from adapters.envelope import (
    PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV,
    KeystoreError,
    passphrase_from_environment,
)

__all__ = ["CONNECTION_ID", "VARIABLE_KEY", "keystore_passphrase"]

CONNECTION_ID: Final = "kcbus_keystore"
VARIABLE_KEY: Final = "kcbus_keystore_passphrase"


def keystore_passphrase(
    conn_id: str = CONNECTION_ID, variable: str = VARIABLE_KEY
) -> Callable[[], str]:
    """A lazy passphrase source for :class:`~adapters.envelope.Keystore` / ``Bus.open``."""

    def lookup() -> str:
        found = passphrase_from_environment(prompt=False) or _from_airflow(conn_id, variable)
        if found is None:
            raise KeystoreError(
                f"no keystore passphrase: set {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV}, the "
                f"password of Airflow Connection {conn_id!r} or Airflow Variable {variable!r}"
            )
        # Every source, not only Airflow's own: an environment variable or a secrets file is
        # as secret as a Connection password, and a task may log what it holds.
        from airflow.sdk.log import mask_secret

        mask_secret(found)
        return found

    return lookup


def _from_airflow(conn_id: str, variable: str) -> str | None:
    from airflow.sdk import Connection, Variable
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = Connection.get(conn_id)
    except AirflowNotFoundException:
        connection = None
    if connection is not None:
        password = connection.password
        if not isinstance(password, str) or not password:
            raise KeystoreError(f"Airflow Connection {conn_id!r} has no password")
        return password
    value = Variable.get(variable, default=None)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise KeystoreError(f"Airflow Variable {variable!r} is empty")
    return value
