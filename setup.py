"""Builds attention_engine._C (pybind11 + libtorch) from csrc/ and the embedded templates.

pip install --no-build-isolation --no-deps -e .    (torch must already be installed)

Sources: every *.cc under a folder of csrc/ other than csrc/torch (the torch-free core: ir,
codegen, jit, and any folder added later), every csrc/torch/*.cpp, and templates/ embedded
into one generated file. MANIFEST.in lists what the sdist carries to rebuild it.
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


def opt_level() -> str:
    """AE_BUILD_OPT: -O0 .. -O3 or -Os (default -O2). scripts/check_sdist.sh builds with -O0:
    it checks that the sdist builds and runs, and the optimized build is the one CI tests."""
    opt = os.environ.get("AE_BUILD_OPT", "-O2")
    if not re.fullmatch(r"-O[0-3s]", opt):
        raise SystemExit(f"AE_BUILD_OPT must be one of -O0, -O1, -O2, -O3, -Os, not {opt!r}")
    return opt


def sources() -> list:
    """Relative paths (setuptools wants them relative to setup.py), sorted."""
    core = sorted(p for p in glob.glob(os.path.join("csrc", "*", "**", "*.cc"), recursive=True,
                                       root_dir=ROOT)
                  if p.split(os.sep)[1] != "torch")
    torch_part = sorted(glob.glob(os.path.join("csrc", "torch", "*.cpp"), root_dir=ROOT))
    return core + torch_part + [os.path.relpath(embedded_templates(), ROOT)]


setup(
    name="attention_engine",
    version=version(),
    package_dir={"": "python"},
    packages=["attention_engine", "attention_engine.integrations"],
    ext_modules=[
        CppExtension(
            name="attention_engine._C",
            sources=sources(),
            include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "third_party"),
                          os.path.join(ROOT, "templates")],
            define_macros=[("FMT_HEADER_ONLY", "1")],
            # -g0 overrides the -g of Python's own CFLAGS: debug info made the .so 58 MB and
            # its compile slower; nothing reads it.
            extra_compile_args=[opt_level(), "-g0", "-Wno-unused-parameter"],
            libraries=["dl"],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
