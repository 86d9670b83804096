"""A cache folder someone else can write, end to end through the extension and NVRTC (issue 15,
defects 7 and 8): the process refuses it with one warning and keeps kernels in memory, never
loads an entry it does not trust, and `cache clear` touches only the cache's own files.
Each case runs in a child process, because a process picks its cache folder once.
(tests/cpp/test_jit_cache_trust.cc forges entries byte by byte; this is the user's view.)"""
import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch  # noqa: F401  (loads libtorch before the extension)

from attention_engine import _C
from conftest import rtc_available

SOURCE = textwrap.dedent('''\
    #include "common/ae_common.h"
    extern "C" __global__ void ae_add(ae::f32* y, ae::i32 n) {
      ae::i32 i = blockIdx.x * blockDim.x + threadIdx.x;
      if (i < n) y[i] += VALUE;
    }
    ''')

COMPILE = textwrap.dedent('''\
    import json, sys, torch
    from attention_engine import _C
    k = _C.jit_compile(SOURCE, "ae_add", "sm_80", options=["-DVALUE=" + sys.argv[1]],
                       threads=64)
    print(json.dumps({"from_disk": k.from_disk, "usable": _C.jit_disk_cache_usable(),
                      "stats": _C.jit_stats(), "dir": _C.jit_cache_dir()}))
    ''')

CLI = ("import sys, runpy, torch; sys.argv[0] = 'attention_engine.cache'; "
       "runpy.run_module('attention_engine.cache', run_name='__main__', alter_sys=True)")


pytestmark = pytest.mark.skipif(not rtc_available("sm_80"), reason="NVRTC not available")


def run(cache_dir, code, *args, env=None):
    e = dict(os.environ) if env is None else env
    if cache_dir is not None:
        e["AE_CACHE_DIR"] = str(cache_dir)
    e.pop("AE_DISABLE_DISK_CACHE", None)
    r = subprocess.run([sys.executable, "-c", code, *args], env=e, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def compile_child(cache_dir, value="1.0f", env=None):
    r = run(cache_dir, f"SOURCE = {SOURCE!r}\n" + COMPILE, value, env=env)
    return json.loads(r.stdout), r.stderr


def test_a_private_folder_is_used(tmp_path):
    first, err = compile_child(tmp_path / "cache")
    assert first["usable"] and not first["from_disk"] and "warning" not in err
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o700
    again, _ = compile_child(tmp_path / "cache")
    assert again["from_disk"]


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_folder_others_can_write_is_refused(tmp_path, mode):
    folder = tmp_path / "shared"
    compile_child(folder)  # an entry that would load...
    os.chmod(folder, mode)  # ...from a folder others could have written
    got, err = compile_child(folder)
    assert not got["from_disk"] and not got["usable"]
    assert err.count("warning") == 1 and "writable by" in err and "memory only" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder away")
def test_folder_of_another_user_is_refused(tmp_path):
    folder = tmp_path / "theirs"
    compile_child(folder)
    os.chown(folder, 65534, 65534)
    got, err = compile_child(folder)
    assert not got["from_disk"] and not got["usable"] and "another user" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_entry_of_another_user_is_not_loaded(tmp_path):
    compile_child(tmp_path)
    (entry,) = (tmp_path / "kernels").iterdir()
    os.chown(entry, 65534, 65534)
    got, _ = compile_child(tmp_path)
    assert not got["from_disk"] and got["usable"]


def test_symlinked_entry_and_folder_are_not_followed(tmp_path):
    real = tmp_path / "real"
    compile_child(real)
    (entry,) = (real / "kernels").iterdir()
    link = tmp_path / "linked"
    (link / "kernels").mkdir(parents=True)
    os.chmod(link, 0o700)
    os.chmod(link / "kernels", 0o700)
    os.symlink(entry, link / "kernels" / entry.name)
    got, _ = compile_child(link)
    assert not got["from_disk"]
    whole = tmp_path / "whole"
    whole.mkdir(mode=0o700)
    os.symlink(real / "kernels", whole / "kernels")
    got, err = compile_child(whole)
    assert not got["from_disk"] and not got["usable"] and "symlink" in err


def test_truncated_entry_is_rebuilt(tmp_path):
    compile_child(tmp_path)
    (entry,) = (tmp_path / "kernels").iterdir()
    entry.write_bytes(entry.read_bytes()[:100])
    got, _ = compile_child(tmp_path)
    assert not got["from_disk"] and got["stats"]["corrupt_entries"] == 1
    assert compile_child(tmp_path)[0]["from_disk"]


def test_no_home_means_no_shared_temp_folder(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HOME", "XDG_CACHE_HOME", "AE_CACHE_DIR")}
    got, _ = compile_child(None, env=env)
    assert not got["dir"].startswith(tempfile.gettempdir()), got["dir"]


def test_clear_touches_only_the_caches_own_files(tmp_path):
    compile_child(tmp_path)
    elsewhere = tmp_path.parent / (tmp_path.name + "-elsewhere")
    elsewhere.mkdir()
    precious = elsewhere / ("0" * 32 + ".aek")
    precious.write_text("not a cache entry")
    (tmp_path / "kernels" / "notes.aek").write_text("mine")
    (tmp_path / "failed").mkdir(mode=0o700, exist_ok=True)
    os.symlink(precious, tmp_path / "failed" / ("1" * 32 + ".log"))
    out = run(tmp_path, CLI, "clear").stdout
    assert out.startswith("removed 1 files")
    assert precious.exists() and (tmp_path / "kernels" / "notes.aek").exists()
