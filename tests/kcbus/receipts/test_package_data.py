"""The receipt XSD and code lists ship inside the kcbus package, so an installed wheel (no
checkout beside it) still validates and reads receipts."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import kcbus
from kcbus.receipts import SCHEMA_DIR

PROJECT = Path(__file__).resolve().parents[3]


def test_schema_folder_lies_inside_the_package() -> None:
    package = Path(kcbus.__file__).resolve().parent
    assert package in SCHEMA_DIR.parents
    assert (SCHEMA_DIR / "kcbus-quittung-1.0.xsd").is_file()
    assert list((SCHEMA_DIR / "codelists").glob("*.xml"))


def test_every_schema_file_is_declared_package_data() -> None:
    setuptools = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]
    receipts = Path(kcbus.__file__).resolve().parent / "receipts"
    globs = setuptools["package-data"]["kcbus.receipts"]
    shipped = [f for f in SCHEMA_DIR.rglob("*") if f.is_file()]
    assert shipped
    for file in shipped:
        relative = file.relative_to(receipts).as_posix()
        assert any(fnmatch(relative, pattern) for pattern in globs), relative
