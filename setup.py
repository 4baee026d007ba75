# cffi_modules has no pyproject.toml key yet: this is the one line setup.py is for.
from setuptools import setup

setup(cffi_modules=["pyoomd/sense/_build.py:ffibuilder"])
