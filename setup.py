"""The package list, which pyproject.toml cannot give: ``packages.find`` there only finds
packages inside the source tree, and the top-level ``conf/`` and ``data/`` folders ship
inside the package as ``mtkit._conf`` and ``mtkit._data`` (mapped in pyproject.toml).
Everything else about the build is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["mtkit", "mtkit.*"]), "mtkit._conf", "mtkit._data"])
