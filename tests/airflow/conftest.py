"""Airflow tests run against an isolated AIRFLOW_HOME (see airflow_home.py)."""

from __future__ import annotations

from tests.airflow.airflow_home import use_test_airflow_home

use_test_airflow_home()
