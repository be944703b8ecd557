"""prefetch: input order, bounded look-ahead, errors where they happened, a clean early stop."""

from __future__ import annotations

import random
import threading
import time

import pytest

from genpromp_annotate.prefetch import prefetch


def test_items_come_out_in_input_order_whatever_the_timing():
    rng = random.Random(0)

    def slow(n):
        for i in range(n):
            time.sleep(rng.random() * 0.003)
            yield i

    out = []
    for item in prefetch(slow(60), depth=3):
        time.sleep(rng.random() * 0.003)
        out.append(item)
    assert out == list(range(60))


def test_the_producer_runs_at_most_depth_ahead():
    produced = []

    def source():
        for i in range(20):
            produced.append(i)
            yield i

    gen = prefetch(source(), depth=2)
    assert next(gen) == 0
    time.sleep(0.3)  # let the producer run as far as it may
    # one handed out, two waiting in the queue, one more blocked in put()
    assert len(produced) <= 4
    assert list(gen) == list(range(1, 20))


def test_an_error_of_the_producer_is_raised_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("image 3 is broken")

    seen = []
    with pytest.raises(ValueError, match="image 3 is broken"):
        seen.extend(prefetch(source(), depth=1))
    assert seen == [1, 2]


def test_closing_early_stops_the_producer():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    gen = prefetch(endless(), depth=1, name="test-prefetch")
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count  # nothing more was produced after close
    assert not any(t.name == "test-prefetch" for t in threading.enumerate())
    assert threading.active_count() <= before


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        next(prefetch([1], depth=0))
