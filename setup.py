"""The one compiled module: the voice bridge's audio path (voice/relay.pyx). Everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize([Extension("voice.relay", ["voice/relay.pyx"])],
                            compiler_directives={"language_level": "3"}))
