"""Builds the optional C hot paths (shared dicts, plain HTTP requests); pyngx works without them (pure Python)."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pyngx.shm._shdict",
            sources=["daemon/pyngx/shm/_shdict.c"],
            libraries=["z"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
            optional=True,
        ),
        Extension(
            "pyngx.http._fast",
            sources=[f"daemon/pyngx/http/{name}.c"
                     for name in ("_fast", "fast_head", "fast_conn", "fast_phases", "fast_answer", "fast_api", "fast_req")],
            depends=["daemon/pyngx/http/fast.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
            optional=True,
        ),
    ],
)
