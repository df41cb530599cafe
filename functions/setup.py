"""The cloud side of the shared package: every module of comfyburst/ but the core ones, which
the comfyburst-core distribution (core/pyproject.toml) ships from the same files.

Cloud Functions never runs this: it installs requirements.txt (which wins over pyproject.toml)
and imports comfyburst/ from the uploaded folder as it is."""

import tomllib
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

_CORE = tomllib.loads((Path(__file__).parent / "core" / "pyproject.toml").read_text())
# comfyburst/__init__.py comes with the core too (py-modules bring their package's __init__).
CORE_MODULES = {name.split(".")[-1] for name in _CORE["tool"]["setuptools"]["py-modules"]}
CORE_MODULES.add("__init__")


class CloudSideBuildPy(build_py):
    """Leaves the core modules to comfyburst-core, so no file belongs to two distributions."""

    def find_package_modules(self, package: str, package_dir: str) -> list:
        modules = super().find_package_modules(package, package_dir)
        if package != "comfyburst":
            return modules
        return [module for module in modules if module[1] not in CORE_MODULES]


setup(cmdclass={"build_py": CloudSideBuildPy})
