"""The autotuner's progress display (csrc/torch/autotune.h reports here): a tqdm bar when tqdm
is installed, else a plain line on stderr (rewritten in place on a terminal)."""
import sys

_bar = None  # (what, stage, tqdm bar or None)


def _tqdm():
    try:
        from tqdm import tqdm
        return tqdm
    except ImportError:
        return None


def _close():
    global _bar
    if _bar is not None and _bar[2] is not None:
        _bar[2].close()
    _bar = None


def report(what: str, stage: str, done: int, total: int, finished: bool, result: str) -> None:
    """One progress report: stage "compile" or "time", done of total; finished with a result."""
    global _bar
    if finished:
        _close()
        print(f"attention_engine: tuned {what}: {result}", file=sys.stderr, flush=True)
        return
    tqdm = _tqdm()
    if _bar is None or _bar[:2] != (what, stage):
        _close()
        bar = tqdm(total=total, desc=f"tuning {what}: {stage}", leave=False,
                   file=sys.stderr) if tqdm else None
        _bar = (what, stage, bar)
    if _bar[2] is not None:
        _bar[2].n = done
        _bar[2].refresh()
    elif sys.stderr.isatty():
        end = "\n" if done == total else ""
        print(f"\rattention_engine: tuning {what}: {stage} {done}/{total}", end=end,
              file=sys.stderr, flush=True)
    elif done == total:
        print(f"attention_engine: tuning {what}: {stage} {done}/{total}", file=sys.stderr,
              flush=True)
