"""Builds attention_engine._C (pybind11 + libtorch) from csrc/ and the embedded templates.

pip install --no-build-isolation --no-deps -e .    (torch must already be installed)
"""
import glob
import os
import re
import subprocess
import sys

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def version() -> str:
    text = open(os.path.join(ROOT, "csrc", "version.h")).read()
    return re.search(r'AE_VERSION "([^"]+)"', text).group(1)


def embedded_templates() -> str:
    out = os.path.join(ROOT, "build", "gen", "embedded_templates.cc")
    subprocess.check_call([sys.executable, os.path.join(ROOT, "tools", "embed_templates.py"),
                           os.path.join(ROOT, "templates"), out])
    return out


def sources() -> list:
    core = []
    for part in ("ir", "codegen", "jit", "plan", "runner"):
        core += sorted(glob.glob(os.path.join("csrc", part, "*.cc")))
    return core + sorted(glob.glob(os.path.join("csrc", "torch", "*.cpp"))) + [
        os.path.relpath(embedded_templates(), ROOT)]


setup(
    name="attention_engine",
    version=version(),
    package_dir={"": "python"},
    packages=["attention_engine"],
    ext_modules=[
        CppExtension(
            name="attention_engine._C",
            sources=sources(),
            include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "third_party"),
                          os.path.join(ROOT, "templates")],
            define_macros=[("FMT_HEADER_ONLY", "1")],
            extra_compile_args=["-O2", "-Wno-unused-parameter"],
            libraries=["dl"],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
