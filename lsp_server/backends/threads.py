"""CPU threads for the local model, measured on the machine it runs on.

llama.cpp's own tools start from all physical cores, to decode and to evaluate prompts; llama-cpp-python
decodes on half the logical CPUs. Neither is right on every machine (a core busy with other work stalls
every step of a decode that waits for it), so at load the model decodes a few tokens and evaluates a
short batch at each candidate count and keeps the fastest, about half a second once per load
(idle, 2 cores, the embedded model).
"""

from __future__ import annotations

import os
import time
from typing import Any

_STEPS = 4
"""Single-token decodes timed per candidate."""
_BATCH = 16
"""Tokens in the timed prompt batch."""


def physical_cores() -> int:
    """The physical cores this process may run on (hyper-threads counted once), as llama.cpp counts them."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as siblings:
                cores.add(siblings.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def candidates(cores: int) -> list[int]:
    """Thread counts worth trying: all physical cores first (llama.cpp's default), then fewer."""
    return list(dict.fromkeys([cores, max(1, cores - 1), max(1, cores // 2)]))


def fastest(llm: Any, cores: int) -> int:
    """The thread count (to decode and to evaluate prompts alike, as llama.cpp's default) that ran a short prompt
    batch and a few single-token decodes fastest on `llm` just now; the KV cache is left empty. A candidate
    stops as soon as it is slower than the best so far (on a busy machine a thread that waits for a taken core
    can make one decode take a second)."""
    import llama_cpp

    tokens = llm.tokenize(b"def fastest(values):\n    return sorted(values, key=len)[0]\n" * 4, add_bos=True)
    tokens = (tokens * (1 + _BATCH // max(1, len(tokens))))[:_BATCH]
    options = sorted(candidates(cores))  # the cheapest to try first sets the bar
    if len(options) == 1:
        return options[0]
    best: dict[int, float] = {}
    for _ in range(2):  # twice, so that a burst of other load does not decide alone
        bar = min(best.values(), default=float("inf"))
        for n in options:
            llama_cpp.llama_set_n_threads(llm.ctx, n, n)
            llm.reset()
            started = time.perf_counter()
            for chunk in [*([token] for token in tokens[:_STEPS]), tokens]:  # one token at a time first: quick to tell
                llm.eval(chunk)
                if time.perf_counter() - started > bar:
                    break
            else:
                took = time.perf_counter() - started
                best[n] = min(best.get(n, float("inf")), took)
                bar = min(bar, took)
    llm.reset()
    return min(best, key=best.__getitem__)
