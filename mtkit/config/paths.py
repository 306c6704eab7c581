"""Where the shipped ``conf/`` and ``data/`` folders are, in a checkout and in a wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
PROJECT_ROOT = PACKAGE_DIR.parent


def project_dir(name: str) -> Path:
    """The top-level ``conf``/``data`` folder: the copy a wheel ships inside the package
    (``mtkit/_conf``, ``mtkit/_data``), else the checkout's own (editable installs)."""
    shipped = PACKAGE_DIR / f"_{name}"
    return shipped if shipped.is_dir() else PROJECT_ROOT / name


CONF_DIR = project_dir("conf")
DATA_DIR = project_dir("data")
