"""The JIT through Python: compiling via attention_engine._C, and the cache CLI
(`python -m attention_engine.cache`) on a temporary AE_CACHE_DIR. Everything that touches the
cache runs in a child process, because a process picks its cache folder once."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch  # noqa: F401  (loads libtorch before the extension)

from attention_engine import _C
from attention_engine import cache as cache_cli

# Equivalent to `python -m attention_engine.cache ARGS`, with torch imported first so it
# also works where the package's __init__ does not import torch itself.
CLI = ("import sys, runpy, torch; sys.argv[0] = 'attention_engine.cache'; "
       "runpy.run_module('attention_engine.cache', run_name='__main__', alter_sys=True)")

SOURCE = textwrap.dedent('''\
    #include "common/ae_common.h"
    extern "C" __global__ void ae_scale(ae::f32* y, const ae::f32* x, ae::f32 a, ae::i32 n) {
      ae::i32 i = blockIdx.x * blockDim.x + threadIdx.x;
      if (i < n) y[i] = a * x[i] + VALUE;
    }
    ''')

COMPILE = textwrap.dedent('''\
    import json, sys, torch
    from attention_engine import _C
    out = []
    for value in sys.argv[1:]:
        k = _C.jit_compile(SOURCE, "ae_scale", "sm_90a",
                           options=["-DVALUE=" + value], threads=128)
        out.append({"key": k.key, "from_disk": k.from_disk, "name": k.name,
                    "figures": k.figures(), "size": len(k.binary), "threads": k.threads})
    out.append(_C.jit_stats())
    out.append(_C.jit_cache_dir())
    print(json.dumps(out))
    ''')


def env_for(cache_dir):
    env = dict(os.environ)
    env["AE_CACHE_DIR"] = str(cache_dir)
    env.pop("AE_DISABLE_DISK_CACHE", None)
    return env


def run_cli(cache_dir, *args):
    r = subprocess.run([sys.executable, "-c", CLI, *args], env=env_for(cache_dir),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def compile_in_child(cache_dir, *values):
    code = f"SOURCE = {SOURCE!r}\n" + COMPILE
    r = subprocess.run([sys.executable, "-c", code, *values], env=env_for(cache_dir),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    *kernels, stats, folder = json.loads(r.stdout)
    return kernels, stats, folder


def info_numbers(text):
    fields = dict(line.split(":", 1) for line in text.strip().splitlines())
    return {k.strip(): v.strip() for k, v in fields.items()}


def test_compile_then_disk_hit_in_a_new_process(tmp_path):
    kernels, stats, folder = compile_in_child(tmp_path, "1.0f", "2.0f")
    assert folder == str(tmp_path)
    assert stats["compiles"] == 2 and stats["disk_hits"] == 0
    assert [k["from_disk"] for k in kernels] == [False, False]
    assert kernels[0]["key"] != kernels[1]["key"]  # options are part of the key
    for k in kernels:
        assert k["name"] == "ae_scale" and k["threads"] == 128 and k["size"] > 0
        assert k["figures"]["registers"] > 0
        assert k["figures"]["spill_stores"] == 0

    again, stats, _ = compile_in_child(tmp_path, "1.0f", "2.0f")
    assert stats["compiles"] == 0 and stats["disk_hits"] == 2
    assert [k["from_disk"] for k in again] == [True, True]
    assert [k["key"] for k in again] == [k["key"] for k in kernels]
    assert [k["figures"] for k in again] == [k["figures"] for k in kernels]


def test_cli_info_prune_clear(tmp_path):
    empty = info_numbers(run_cli(tmp_path, "info"))
    assert empty["folder"] == str(tmp_path) and empty["entries"] == "0"

    compile_in_child(tmp_path, "1.0f")
    compile_in_child(tmp_path, "2.0f")  # newer
    compile_in_child(tmp_path, "3.0f")  # newest
    shown = info_numbers(run_cli(tmp_path, "info"))
    assert shown["entries"] == "3"
    total = int(shown["total size"].split("(")[1].split()[0])
    files = sorted((tmp_path / "kernels").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert total == sum(p.stat().st_size for p in files)

    # Room for two of the three: the oldest one goes.
    keep = files[1].stat().st_size + files[2].stat().st_size
    out = run_cli(tmp_path, "prune", "--max-size", str(keep))
    assert out.startswith("removed 1 files")
    assert sorted((tmp_path / "kernels").iterdir()) == sorted(files[1:])
    assert info_numbers(run_cli(tmp_path, "info"))["entries"] == "2"

    out = run_cli(tmp_path, "clear")
    assert out.startswith("removed 2 files")
    assert info_numbers(run_cli(tmp_path, "info"))["entries"] == "0"
    # After a clear the kernel is compiled again, not read back.
    _, stats, _ = compile_in_child(tmp_path, "1.0f")
    assert stats["compiles"] == 1


def test_cli_dir_option_and_bad_size(tmp_path):
    other = tmp_path / "other"
    out = run_cli(tmp_path, "--dir", str(other), "info")
    assert info_numbers(out)["folder"] == str(other)
    r = subprocess.run([sys.executable, "-c", CLI, "prune", "--max-size", "lots"],
                       env=env_for(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--max-size" in r.stderr


def test_compile_error_in_python(tmp_path):
    code = textwrap.dedent('''\
        import json, torch
        from attention_engine import _C
        try:
            _C.jit_compile('extern "C" __global__ void k() { nope }', "k", "sm_80")
        except _C.CompileError as e:
            print(json.dumps({"runtime": isinstance(e, RuntimeError),
                              "jit": isinstance(e, _C.JitError), "log": e.log,
                              "source": e.source, "path": e.log_path, "message": str(e)}))
        ''')
    r = subprocess.run([sys.executable, "-c", code], env=env_for(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["runtime"] and e["jit"]
    assert "error" in e["log"] and e["log"] in e["message"]
    assert e["source"].startswith("    1 | extern")
    assert e["path"].startswith(str(tmp_path / "failed"))
    assert e["path"] in e["message"]
    saved = open(e["path"]).read()
    assert e["log"] in saved and e["source"] in saved


def test_check_arches_reports_every_target(tmp_path):
    code = f"SOURCE = {SOURCE!r}\n" + textwrap.dedent('''\
        import json, torch
        from attention_engine import _C
        reports = _C.jit_check_arches(SOURCE, "ae_scale", options=["-DVALUE=1.0f"])
        for r in reports:  # which compiler this process loaded, for the failure message
            r["compiler"] = _C.jit_compiler_version(r["arch"]) if r["ok"] else ""
        print(json.dumps(reports))
        ''')
    r = subprocess.run([sys.executable, "-c", code], env=env_for(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    reports = json.loads(r.stdout)
    assert [x["arch"] for x in reports] == ["sm_80", "sm_90a", "gfx90a"]
    for x in reports:
        assert x["ok"], x["error"]
        assert x["registers"] > 0 and x["spill_stores"] == 0 and x["spill_loads"] == 0, (
            x["arch"], x.get("from_disk"), x.get("log"), x.get("compiler"))


def test_parse_size():
    assert cache_cli.parse_size("2048") == 2048
    assert cache_cli.parse_size("500M") == 500 << 20
    assert cache_cli.parse_size("1.5G") == 3 << 29
    assert cache_cli.parse_size("64KiB") == 64 << 10
    with pytest.raises(ValueError):
        cache_cli.parse_size("lots")


def test_helpers_without_a_cache():
    assert _C.nvidia_arch(9, 0, True) == "sm_90a"
    assert _C.nvidia_arch(8, 0) == "sm_80"
    assert issubclass(_C.CompileError, _C.JitError)
    assert issubclass(_C.JitError, RuntimeError)
    with pytest.raises(ValueError):
        _C.jit_find("not a key")
    assert _C.jit_find("0" * 32) is None
