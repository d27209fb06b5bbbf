"""The failure scenarios, as data: what happens to the link or the edge, and when.

Times are seconds after the first camera frame. `scenarios()` scales one template: the tests use
short faults (a few seconds each), the benchmark longer ones; the sequence of actions is the same.
Each scenario names its fault class, which decides the bounds a run is held to:
  blackhole  no answer, no error: the first frame it hits is answered within deadline + local p99;
  refused    the edge says no at once (RST, refused, RESOURCE_EXHAUSTED): within one frame period;
  flapping   the link comes and goes: no return to the edge faster than the probes allow;
  bad_answer the edge answers, wrongly: every such answer is replaced by a local one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

BLACKHOLE, REFUSED, FLAPPING, BAD_ANSWER = "blackhole", "refused", "flapping", "bad_answer"

# Actions a step may name; robot_compress.faults.experiment carries them out.
ACTIONS = frozenset({
    "kill_edge", "start_edge", "freeze_edge", "thaw_edge",  # the edge server process
    "drop", "reject", "clear",  # iptables in the robot namespace
    "link_down", "link_up", "flap",  # the veth link
    "proxy",  # the fault proxy between robot and edge (args: mode / up / down / both)
    "flood", "flood_stop",  # load on the edge from a second client inside the edge namespace
    "swap_edge",  # replace the edge server by one serving a wrong model under the same name
})


@dataclass(frozen=True)
class Step:
    at_s: float
    action: str
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; known: {sorted(ACTIONS)}")


@dataclass(frozen=True)
class Scenario:
    """One scenario. The fault lasts from the first step to the last (for `start_edge`, until
    the restarted server listens); `duration_s` leaves time to recover after it."""

    name: str
    description: str
    fault_class: str
    steps: tuple[Step, ...]
    duration_s: float
    via_proxy: bool = False  # the robot reaches the edge through the fault proxy
    edge_args: tuple[str, ...] = ()  # extra `edge_server` arguments for this scenario

    @property
    def fault_start_s(self) -> float:
        return self.steps[0].at_s

    @property
    def fault_end_s(self) -> float:
        return self.steps[-1].at_s


def flap_periods(total_s: float, low_s: float = 0.5, high_s: float = 2.0, seed: int = 6) -> tuple[float, ...]:
    """Alternating down/up periods drawn uniformly from [low_s, high_s], summing to about total_s."""
    rng = random.Random(seed)
    periods: list[float] = []
    while sum(periods) < total_s:
        periods.append(round(rng.uniform(low_s, high_s), 2))
    return tuple(periods)


def scenarios(fault_s: float = 2.0, lead_s: float = 1.5, recover_s: float = 3.0, flap_s: float = 30.0,
              flap_low_s: float = 0.5, flap_high_s: float = 2.0) -> list[Scenario]:
    """Every scenario: `lead_s` of normal service, a fault of `fault_s` (`flap_s` for flapping),
    then `recover_s` to get back to the edge."""
    a, b = lead_s, lead_s + fault_s
    duration = b + recover_s
    periods = flap_periods(flap_s, flap_low_s, flap_high_s)
    slow = {"latency_ms": 150.0, "jitter_ms": 30.0, "bandwidth_bps": 50_000.0}
    normal = {"latency_ms": 0.0, "jitter_ms": 0.0, "bandwidth_bps": None}
    return [
        Scenario("kill", "edge server SIGKILLed, restarted after the fault", REFUSED,
                 (Step(a, "kill_edge"), Step(b, "start_edge")), duration),
        Scenario("freeze", "edge server SIGSTOPped then SIGCONTed: a black hole, no RST, no FIN", BLACKHOLE,
                 (Step(a, "freeze_edge"), Step(b, "thaw_edge")), duration),
        Scenario("drop", "iptables DROP to and from the edge in the robot namespace", BLACKHOLE,
                 (Step(a, "drop"), Step(b, "clear")), duration),
        Scenario("reject", "iptables REJECT --reject-with tcp-reset in the robot namespace", REFUSED,
                 (Step(a, "reject"), Step(b, "clear")), duration),
        Scenario("link_down", "robot's veth link set down, then up", BLACKHOLE,
                 (Step(a, "link_down"), Step(b, "link_up")), duration),
        Scenario("slow_link", f"proxy adds {slow['latency_ms']:g}+/-{slow['jitter_ms']:g} ms per direction "
                 f"and caps {slow['bandwidth_bps'] / 1000:g} kB/s", BLACKHOLE,
                 (Step(a, "proxy", {"both": slow}), Step(b, "proxy", {"both": normal})), duration, via_proxy=True),
        Scenario("flap", f"link down/up every {flap_low_s:g}-{flap_high_s:g} s for {sum(periods):g} s", FLAPPING,
                 (Step(a, "flap", {"periods_s": periods}), Step(a + sum(periods), "link_up")),
                 a + sum(periods) + recover_s),
        # One call at a time on the edge, kept busy by one flooding thread: nearly every robot call
        # finds the edge busy. More threads would only spin on their own rejections and starve
        # the robot's processes, which share this machine's CPU with the edge.
        Scenario("overload", "a second client keeps an edge limited to 1 concurrent call busy: "
                 "RESOURCE_EXHAUSTED", REFUSED,
                 (Step(a, "flood", {"threads": 1}), Step(b, "flood_stop")), duration,
                 edge_args=("--max-concurrent-rpcs", "1")),
        Scenario("wrong_model", "the edge is replaced by one answering with a wrong output shape", BAD_ANSWER,
                 (Step(a, "swap_edge"), Step(b, "start_edge")), duration),
    ]

