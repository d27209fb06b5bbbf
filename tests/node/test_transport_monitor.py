"""The node's recent view of transport loss: what arrived and what went missing in the last 2 s,
fed real std_msgs headers."""

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


def test_recent_loss_covers_the_last_two_seconds_however_often_it_is_asked():
    log, now = Log(), [0.0]
    monitor = TransportMonitor(log, {"image": "/camera/image"}, clock=lambda: now[0])
    for seq in (0, 1, 2, 5, 6, 7, 8, 9, 10, 11):  # 3 and 4 lost, within the first second
        monitor.observe("image", frame(seq))
    now[0] = 1.0
    assert monitor.recent() == (10, 2)
    now[0] = 1.2
    assert monitor.recent() == (10, 2)  # a report 0.2 s later still sees them
    for seq in (12, 13, 20):  # 14..19 lost
        monitor.observe("image", frame(seq))
    now[0] = 2.5
    assert monitor.recent() == (13, 8)  # from the start: the newest report at least 2 s back
    now[0] = 3.3
    assert monitor.recent() == (3, 6)  # from the 1.2 s report: the first loss has left the window
    now[0] = 5.4
    assert monitor.recent() == (0, 0)  # nothing new for over two seconds
    assert monitor.values()["frames_missing_in_transport"] == "8"  # the total stays
    assert log.warnings and "/camera/image" in log.warnings[0]
