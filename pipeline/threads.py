"""Ordered, bounded parallel map over threads.

The kernels it runs (numpy, Arrow) release the GIL, so threads give real
parallelism without pickling batches to other processes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int = 4) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, in input order.

    Unlike ``Executor.map`` it pulls items lazily, at most ``workers * ahead``
    at a time, so a stream of batches is never read into memory all at once.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers * ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
