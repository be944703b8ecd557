"""A bounded prefetch queue: work out the next items on a thread while the caller uses the current one.

The annotate loop runs its claims, downloads and decoding here, so the model never waits for them.
Items come out in input order; an exception of the producer is raised in the consumer, at the place of
the item that failed; closing the generator early stops the producer after the item it is working on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 1, name: str = "prefetch") -> Generator[T, None, None]:
    """Yield `items` in order while a daemon thread computes up to `depth` of them ahead.

    `depth` bounds the memory held (items ready and waiting); the producer blocks when it is reached.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1, got {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand one item over, giving up when the consumer has gone."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failure(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
