"""Packaging (issue 16, item 3): the sdist carries everything the build needs, the extension
is built once and is small, a moved checkout configures, the tests' kernels stay out of the
user's cache. (CI also installs the sdist into a fresh environment: scripts/check_sdist.sh.)"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile

import pytest

import attention_engine as ae
from attention_engine import cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tracked(*folders):
    out = subprocess.run(["git", "ls-files", *folders], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return {p for p in out.stdout.split() if os.path.exists(os.path.join(ROOT, p))}


def test_sdist_has_every_file_the_build_needs(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT,
                   check=True, capture_output=True)
    (sdist,) = tmp_path.glob("attention_engine-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = tracked("csrc", "templates", "third_party", "tools", "python") | {
        "setup.py", "pyproject.toml", "MANIFEST.in", "README.md"}
    missing = sorted(needed - names)
    assert not missing, f"the sdist lacks {missing[:10]}"
    assert not any(n.endswith(".so") for n in names)


def test_extension_is_small():
    size = os.path.getsize(ae._C.__file__)
    assert size < 16 << 20, f"{ae._C.__file__} is {size >> 20} MB (debug info?)"


def test_extension_built_once_and_imported_from_the_checkout():
    """scripts/setup_env.sh builds in place and puts python/ on the path with a .pth file; a
    `pip install -e .` beside it would compile every object a second time."""
    venv = os.path.join(ROOT, ".venv")
    if os.path.realpath(sys.prefix) != os.path.realpath(venv):
        pytest.skip("not running in the checkout's .venv")
    assert os.path.dirname(ae.__file__) == os.path.join(ROOT, "python", "attention_engine")
    site = sysconfig.get_paths()["purelib"]
    pip_copies = [n for n in os.listdir(site) if n.startswith(("attention_engine-",
                                                               "__editable__.attention_engine"))]
    assert not pip_copies, f"a pip-built copy of the package is installed too: {pip_copies}"
    with open(os.path.join(site, "attention_engine_dev.pth")) as f:
        assert f.read().strip() == os.path.join(ROOT, "python")


def test_tests_cache_kernels_in_a_temporary_folder():
    folder = os.path.realpath(cache.info()["dir"])
    assert folder.startswith(os.path.realpath(tempfile.gettempdir()) + os.sep) or \
        os.environ.get("AE_TEST_CACHE_DIR"), folder
    assert not folder.startswith(os.path.realpath(os.path.expanduser("~/.cache")))


def test_moved_checkout_configures(tmp_path):
    """A build folder configured in one place, then the checkout moved: cmake_configure.sh
    starts the build folder anew instead of failing on CMakeCache.txt."""
    if shutil.which("cmake") is None:
        pytest.skip("no cmake")
    first = tmp_path / "first"
    for part in ("CMakeLists.txt", "csrc", "templates", "third_party", "tools", "tests/cpp"):
        src = os.path.join(ROOT, part)
        dst = first / part
        if os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    script = os.path.join(ROOT, "scripts", "cmake_configure.sh")

    def configure(tree):
        return subprocess.run(["bash", script, str(tree), str(tree / "build")],
                              capture_output=True, text=True)
    assert configure(first).returncode == 0
    moved = tmp_path / "moved"
    first.rename(moved)
    plain = subprocess.run(["cmake", "-S", str(moved), "-B", str(moved / "build")],
                           capture_output=True, text=True)
    assert plain.returncode != 0  # what a moved checkout got before
    result = configure(moved)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "removing it" in result.stdout
    with open(moved / "build" / "CMakeCache.txt") as f:
        assert f"CMAKE_HOME_DIRECTORY:INTERNAL={moved}" in f.read()
