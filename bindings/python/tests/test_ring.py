"""The ring over many laps, with one and with several producers and consumers."""

from __future__ import annotations

import threading

import pytest

import dmxp
from dmxp import pattern

from .conftest import SMALL_SEGMENT


@pytest.mark.parametrize("capacity", [2, 4])
def test_more_than_ten_laps_one_at_a_time(segment: str, capacity: int) -> None:
    laps = 25
    with (
        dmxp.Producer(0, capacity=capacity, segment=segment, size=SMALL_SEGMENT) as producer,
        dmxp.Consumer(0, segment=segment) as consumer,
    ):
        index = 0
        for lap in range(laps):
            # Fill the ring exactly: the next send finds it full.
            for _ in range(capacity):
                payload = pattern.encode(0, index, pattern.default_len(index))
                assert producer.send(payload) == index
                index += 1
            with pytest.raises(dmxp.FullError):
                producer.send(b"over")
            info = producer.info()
            assert (info["tail"], info["depth"]) == (index, capacity), lap
            # Drain it: every message once, in order, with its id.
            for expected in range(index - capacity, index):
                message = consumer.receive_with_meta()
                assert message is not None
                assert message.message_id == expected
                assert pattern.decode(message.payload) == (0, expected)
            assert consumer.receive() is None
        assert consumer.info()["head"] == laps * capacity


@pytest.mark.parametrize("capacity", [2, 4])
def test_more_than_ten_laps_in_batches(segment: str, capacity: int) -> None:
    total = 30 * capacity + 1  # ends mid-lap
    payloads = [pattern.encode(1, i, 24 + i % 100) for i in range(total)]
    received: list[bytes] = []
    with (
        dmxp.Producer(1, capacity=capacity, segment=segment, size=SMALL_SEGMENT) as producer,
        dmxp.Consumer(1, segment=segment) as consumer,
    ):
        sent = 0
        while sent < total:
            # Offer more than fits: a batch never claims more than the free slots.
            count = producer.send_batch(payloads[sent : sent + capacity + 3])
            assert count == min(capacity, total - sent)
            sent += count
            if sent < total:
                assert producer.send_batch(payloads[sent : sent + 1]) == 0  # full
            batch = consumer.receive_batch(capacity + 5)
            assert len(batch) == count
            received.extend(batch)
        assert consumer.receive_batch(8) == []
    assert received == payloads


def test_blocking_senders_and_receivers_across_laps(segment: str) -> None:
    """Two producer threads and two consumer threads on a ring of 4: every message exactly
    once, each producer's messages in order."""
    per_producer = 3000
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT):
        pass
    results: list[list[tuple[int, int]]] = [[], []]
    errors: list[BaseException] = []

    def produce(channel_tag: int) -> None:
        try:
            with dmxp.Producer(0, segment=segment) as producer:
                for i in range(per_producer):
                    producer.send_timeout(pattern.encode(channel_tag, i, 32), 30.0)
        except BaseException as e:
            errors.append(e)

    done = threading.Event()

    def consume(slot: int) -> None:
        try:
            with dmxp.Consumer(0, segment=segment) as consumer:
                while not done.is_set() or consumer.info()["depth"]:
                    for payload in consumer.receive_batch(3, timeout=0.05):
                        results[slot].append(pattern.decode(payload))
        except BaseException as e:
            errors.append(e)

    producers = [threading.Thread(target=produce, args=(tag,)) for tag in (100, 200)]
    consumers = [threading.Thread(target=consume, args=(slot,)) for slot in (0, 1)]
    for thread in consumers + producers:
        thread.start()
    for thread in producers:
        thread.join()
    done.set()
    for thread in consumers:
        thread.join()
    assert errors == []
    everything = results[0] + results[1]
    assert sorted(everything) == sorted((tag, i) for tag in (100, 200) for i in range(per_producer))
    # Within one consumer, one producer's messages arrive in increasing order.
    for got in results:
        for tag in (100, 200):
            indices = [i for t, i in got if t == tag]
            assert indices == sorted(indices)
