"""pip install --no-build-isolation .   (with Debian's python3-setuptools, python3-wheel, pybind11-dev)

Builds the kvmem Python module from python/src (bindings) and src (the library), with the
compiler's C++20 mode. No download: pybind11's headers come from Debian's pybind11-dev.
"""
import glob
import os

from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))


def rel(pattern):
    return sorted(os.path.relpath(p, here) for p in glob.glob(os.path.join(here, pattern)))


ext = Extension(
    "kvmem._kvmem",
    sources=rel("python/src/*.cpp") + rel("src/*.cpp"),
    include_dirs=["include", "python/src"],
    language="c++",
    extra_compile_args=["-std=c++20", "-O2", "-fvisibility=hidden"],
    extra_link_args=["-pthread"],
)

setup(
    name="kvmem",
    version="0.1.0",
    description="Allocators, pools and caches for the memory under key-value caches",
    packages=["kvmem"],
    package_dir={"kvmem": "python/kvmem"},
    package_data={"kvmem": ["*.pyi", "py.typed"]},
    ext_modules=[ext],
    python_requires=">=3.9",
    zip_safe=False,
)
