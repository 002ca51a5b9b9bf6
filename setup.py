"""The one compiled part: the uint8 L1 kernel. `optional=True`: without a C compiler the install
still succeeds and shazzam.distance falls back to numpy (slower, same answers)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shazzam._l1kernel",
            sources=["layers/shazzam/_l1kernel.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
