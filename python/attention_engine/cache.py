"""The JIT kernel cache on disk: ``python -m attention_engine.cache {info,clear,prune}``.

The folder is $AE_CACHE_DIR, else $XDG_CACHE_HOME/attention_engine, else
$HOME/.cache/attention_engine, else the account's home + /.cache/attention_engine (layout and
trust model: csrc/jit/disk_cache.h). --dir picks another one. clear and prune remove only the
cache's own files (never through a symlink, never a live writer's temporary file), so they are
safe beside running processes. The autotuner's stored choices live in its tuning/ folder
(csrc/tune/store.h): info lists them, clear removes them too.
"""
import argparse
import re
import sys

from . import _C

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'500M', '1.5G', '2048', '64KiB' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgtb]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 500M, 2G, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def info(directory=None) -> dict:
    return _C.jit_cache_info(directory)


def clear(directory=None) -> int:
    return _C.jit_cache_clear(directory) + _C.tune_clear(directory)


def choices(directory=None) -> list:
    """The stored tuning choices: dicts with key, choice, describe, ms, table_ms, ..."""
    return _C.tune_list(directory)


def prune(max_bytes: int, directory=None) -> dict:
    return _C.jit_cache_prune(max_bytes, directory)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attention_engine.cache",
                                     description="Show or trim the JIT kernel cache.")
    parser.add_argument("--dir", default=None, help="cache folder (default: from the environment)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="folder, entries, total size, stored tuning choices")
    sub.add_parser("clear", help="remove every cached kernel, failure log and tuning choice "
                                 "(not a running writer's temporary file)")
    p = sub.add_parser("prune", help="remove least recently used entries down to a size")
    p.add_argument("--max-size", required=True, type=parse_size, help="e.g. 500M, 2G")
    args = parser.parse_args(argv)

    if args.command == "info":
        s = info(args.dir)
        print(f"folder:      {s['dir'] or '(none: kernels are kept in memory only)'}")
        print(f"entries:     {s['kernels']}")
        print(f"failed logs: {s['failed_logs']}")
        if s["temp_files"]:
            print(f"temp files:  {s['temp_files']}")
        print(f"total size:  {format_size(s['total_bytes'])} ({s['total_bytes']} bytes)")
        stored = choices(args.dir)
        print(f"tuning choices: {len(stored)}")
        for c in stored:  # the key's text says what: kind, variant, shape class, GPU
            speedup = c["table_ms"] / c["ms"] if c["ms"] > 0 else 0.0
            print(f"  {c['choice'] or '(table)'}  {c['ms']:.4f} ms, {speedup:.2f}x the table's  "
                  f"[{c['key']}]")
    elif args.command == "clear":
        print(f"removed {clear(args.dir)} files from {info(args.dir)['dir']}")
    else:
        r = prune(args.max_size, args.dir)
        print(f"removed {r['removed']} files ({format_size(r['freed_bytes'])}); "
              f"{format_size(r['remaining_bytes'])} remain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
