"""The one compiled part: the uint8 L1 kernel. `optional=True`: without a C compiler the install
still succeeds and shazzam.distance falls back to numpy (slower, same answers).

It is built against Python 3.11's stable ABI (Py_LIMITED_API, set in the source too), so the one
file `_l1kernel.abi3.so` loads on 3.11 and on 3.12, Lambda's runtime: cdk/build_layers.py puts the
same build into the library layer (it reads KERNEL from here).
"""

from setuptools import Extension, setup

LIMITED_API = "0x030B0000"  # Python 3.11

KERNEL = dict(
    name="shazzam._l1kernel",
    sources=["layers/shazzam/_l1kernel.c"],
    extra_compile_args=["-O3"],
    define_macros=[("Py_LIMITED_API", LIMITED_API)],
    py_limited_api=True,
)

if __name__ == "__main__":  # as setuptools runs it; build_layers.py reads KERNEL only
    setup(
        ext_modules=[Extension(**KERNEL, optional=True)],
        options={"bdist_wheel": {"py_limited_api": "cp311"}},
    )
