"""One ordered worker pool for CPU-bound stages (tokenize, mine, ...).

`ordered_map` applies a picklable function to a stream of items over
``workers`` processes and yields the results in input order, reading ahead at
most ``2 x workers`` items so memory stays flat on any corpus size. Output is
therefore identical for any number of workers. Processes are *spawned*, not
forked: a forked copy of a process that already ran Rust (tokenizers) or
OpenMP (torch) threads can deadlock.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
from typing import Any, Callable, Iterable, Iterator


def ordered_map(fn: Callable[..., Any], items: Iterable[Any], workers: int, *args: Any,
                initializer: Callable[[], None] | None = None) -> Iterator[Any]:
    """``fn(item, *args)`` for each item, in order, over ``workers`` processes."""
    if workers <= 1:  # in this process: ``initializer`` is for worker processes only
        for item in items:
            yield fn(item, *args)
        return
    with mp.get_context("spawn").Pool(workers, initializer=initializer) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item, *args)))
            if len(pending) >= 2 * workers:  # bounded read-ahead
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
