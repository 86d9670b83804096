"""Compiling one definition from several threads at once returns one object, as a sequential
compile does (issue 15, defect 9)."""
import threading

import torch

import attention_engine as ae

THREADS, TRIALS = 8, 100


def test_threads_compiling_one_definition_get_the_same_object():
    for trial in range(TRIALS):
        bias = torch.full((4,), float(trial))  # a fresh key every trial
        mod = lambda s, b, h, q, k: s + bias[h] * (trial + 1.5)  # noqa: E731
        start = threading.Barrier(THREADS)
        got = [None] * THREADS

        def compile_it(i):
            start.wait()
            got[i] = ae.compile(mod)

        threads = [threading.Thread(target=compile_it, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(a) for a in got}) == 1, f"trial {trial}: {len({id(a) for a in got})} objects"
        assert got[0] is ae.compile(mod)
