"""The one compiled module (the voice bridge's audio path, voice/relay.pyx) and which packages ship.

The wheel (the production image) carries the platform's runtime packages only. The embedded servers
and stand-ins (devstack, emulators) are for `make run` and `make test`, which install the checkout
editable with DEEPCLAW_DEV_INSTALL=1. Everything else is in pyproject.toml."""

import os

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

RUNTIME = ["core", "workflows", "activities", "workers", "api", "voice"]
DEVELOPMENT = ["devstack", "emulators"]

included = RUNTIME + (DEVELOPMENT if os.environ.get("DEEPCLAW_DEV_INSTALL") == "1" else [])
setup(packages=find_packages(include=[*included, *(f"{name}.*" for name in included)]),
      ext_modules=cythonize([Extension("voice.relay", ["voice/relay.pyx"])],
                            compiler_directives={"language_level": "3"}))
