"""The hand-off between the executor and the inference thread: newest frame wins, drops counted."""

from __future__ import annotations

import threading

from robot_compress.runtime.frame_queue import LatestFrameQueue


def test_full_queue_drops_the_oldest_and_counts_it():
    queue = LatestFrameQueue(2)
    for i in range(5):
        queue.put(i)
    assert queue.dropped == 3
    assert [queue.get(0), queue.get(0), queue.get(0.01)] == [3, 4, None]


def test_get_waits_for_a_frame_and_close_wakes_it():
    queue = LatestFrameQueue(1)
    got = []
    reader = threading.Thread(target=lambda: got.append(queue.get()))
    reader.start()
    queue.put("frame")
    reader.join(2)
    assert got == ["frame"]
    reader = threading.Thread(target=lambda: got.append(queue.get()))
    reader.start()
    queue.close()
    reader.join(2)
    assert not reader.is_alive() and got == ["frame", None]


def test_frames_left_at_close_and_put_after_it_are_counted_as_dropped():
    queue = LatestFrameQueue(4)
    for i in range(3):
        queue.put(i)
    assert queue.get(0) == 0
    queue.close()
    assert queue.get(0) is None and queue.dropped == 2  # in == out + dropped: 3 == 1 + 2
    queue.put(3)
    assert queue.get(0) is None and queue.dropped == 3
