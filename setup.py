"""The compiled kernels (``dcformat._kernels``, one C file, no dependency but the C compiler).

Everything else is declared in pyproject.toml. The extension is optional: where it cannot be
built the package installs without it and decodes with its numpy kernels (dcformat/kernels.py
says which are in use and warns once).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dcformat._kernels",
            sources=["dcformat/_kernels.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
