"""The node's per-report view of transport loss: what arrived and what went missing since the last
report, fed real std_msgs headers."""

from __future__ import annotations

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from robot_compress.ros.transport_monitor import TransportMonitor


class Log:
    def __init__(self):
        self.warnings: list[str] = []

    def warning(self, text: str, throttle_duration_sec: float = 0.0) -> None:
        self.warnings.append(text)


def frame(seq: int, period_s: float = 0.1) -> Header:
    t = 100 + seq * period_s
    return Header(stamp=Time(sec=int(t), nanosec=round((t % 1) * 1e9)), frame_id=f"camera#{seq}")


def test_each_report_counts_only_the_frames_since_the_previous_one():
    log = Log()
    monitor = TransportMonitor(log, {"image": "/camera/image"})
    for seq in (0, 1, 2, 5, 6, 7, 8, 9, 10, 11):  # 3 and 4 lost
        monitor.observe("image", frame(seq))
    assert monitor.since_last_report() == (10, 2)
    assert monitor.since_last_report() == (0, 0)
    for seq in (12, 13, 20):
        monitor.observe("image", frame(seq))
    assert monitor.since_last_report() == (3, 6)
    assert monitor.values()["frames_missing_in_transport"] == "8"  # the total stays
    assert log.warnings and "/camera/image" in log.warnings[0]
