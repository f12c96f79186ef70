"""Builds the optional C hot path of the shared dicts; pyngx works without it (pure Python)."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pyngx.shm._shdict",
            sources=["daemon/pyngx/shm/_shdict.c"],
            libraries=["z"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
            optional=True,
        )
    ],
)
