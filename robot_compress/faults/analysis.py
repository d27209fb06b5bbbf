"""From a run's records to the failover figures and bounds (docs/FAULTS.md), and a timeline plot.

Frames are joined by their camera stamp: sim_camera's ground truth and the images it published
say which frames exist, the node's results say which were answered, by whom and how fast.
Times: `latency_ms` is the router's (classify called -> answer); `node` is the node's subscription
receiving the frame -> the router's answer (the node's queue and the router: what failover
controls, and what the bounds hold); `answered` is camera stamp -> the router's answer (adds the
camera's DDS transport); `e2e_ms` is camera stamp -> result received by the recorder (adds the
result's DDS transport too).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from robot_compress.faults.experiment import RunRecord
from robot_compress.faults.scenarios import BLACKHOLE, FLAPPING, REFUSED
from robot_compress.runtime.latency_stats import percentile


def _stamp(record: dict) -> float:
    return record["stamp"]["sec"] + record["stamp"]["nanosec"] * 1e-9


def frame_key(record: dict) -> tuple[int, int]:
    return record["stamp"]["sec"], record["stamp"]["nanosec"]


def _accuracy(pairs: list[tuple[int, int]]) -> float | None:
    return sum(p == t for p, t in pairs) / len(pairs) if pairs else None


@dataclass
class ScenarioMetrics:
    scenario: str
    fault_class: str
    frames_published: int
    frames_in: int | None  # received by the node (its diagnostics)
    results: int
    lost: int  # published frames without a result
    lost_in_transport: int | None  # never reached the node (best-effort sensor QoS): published - frames_in
    duplicated: int
    out_of_order: int
    queue_dropped: int | None
    node_local_p99_ms: float | None  # the on-robot model's p99 as the node measured it during the run
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    e2e_p50_ms: float | None
    e2e_p99_ms: float | None
    e2e_max_ms: float | None
    fault_start: float | None  # None: the run injected no fault
    fault_end: float | None
    first_local_after_fault_ms: float | None  # fault start -> first local result received
    first_hit_e2e_ms: float | None  # the first frame the node received after the fault start: stamp -> received
    first_hit_answered_ms: float | None  # the same result: stamp -> the router's answer
    first_hit_node_ms: float | None  # node receipt -> answered, the bounds' quantity (None: no received_at)
    first_hit_backend: str | None
    fault_latency_max_ms: float | None  # max router latency of results received after the fault start
    back_to_edge_ms: float | None  # fault end -> first edge result for a frame stamped after it
    edge_fraction: float
    min_local_dwell_ms: float | None  # shortest failover -> back-to-edge interval
    spurious_failovers: int  # switches to local after the first frame but before the fault
    returns_to_edge: int
    top1: float | None
    top1_edge: float | None
    top1_local: float | None
    backends: dict[str, int]
    edge_failures: dict[str, int]
    machine_stall_max_ms: float  # the test machine's worst stall during the run (faults.stall_watch)

    def to_dict(self) -> dict:
        return asdict(self)


def analyze(run: RunRecord) -> ScenarioMetrics:
    by_kind: dict[str, list[dict]] = {}
    for record in run.records:
        by_kind.setdefault(record["kind"], []).append(record)
    truth = {frame_key(r): r for r in by_kind.get("truth", [])}
    published = set(truth) | {frame_key(r) for r in by_kind.get("image", [])}
    results = by_kind.get("result", [])
    answered = Counter(frame_key(r) for r in results)
    stamps = [_stamp(r) for r in results]
    out_of_order = sum(b < a for a, b in zip(stamps, stamps[1:], strict=False))
    diagnostics = by_kind.get("diagnostics", [{}])[-1].get("values", {})

    # A run without fault actions (the demo's --no-fault) has no fault window: nothing is "after" it.
    fault_start, fault_end = (run.actions[0][0], run.actions[-1][0]) if run.actions else (math.inf, math.inf)
    e2e = {id(r): (r["t"] - _stamp(r)) * 1000 for r in results}
    latency = [r["latency_ms"] for r in results]
    local_after = [r for r in results if r["backend"] == "local" and r["t"] >= fault_start]
    # The first frame the fault hits: the first the node received once the fault was in effect. A
    # frame already on its way to the edge is judged by the router-latency bound instead: a reset
    # rule, for one, cannot reset a request that is already out (netns.NetTestbed.reject).
    hit = next((r for r in results if (r.get("received_at") or r["t"]) >= fault_start), None)
    after = [r["latency_ms"] for r in results if r["t"] >= fault_start]
    back = next((r for r in results if r["backend"] == "edge" and _stamp(r) >= fault_end), None)

    pairs = {name: [(r.get("class_id"), truth[frame_key(r)]["class_id"]) for r in results
                    if frame_key(r) in truth and truth[frame_key(r)]["class_id"] >= 0
                    and (name == "all" or r["backend"] == name)]
             for name in ("all", "edge", "local")}
    dwell = local_dwells(by_kind.get("event", []), run.t0)
    return ScenarioMetrics(
        scenario=run.scenario.name, fault_class=run.scenario.fault_class,
        frames_published=len(published), frames_in=_int(diagnostics.get("frames_in")), results=len(results),
        lost=len(published - set(answered)), duplicated=sum(n - 1 for n in answered.values()),
        lost_in_transport=len(published) - int(diagnostics["frames_in"]) if "frames_in" in diagnostics else None,
        out_of_order=out_of_order, queue_dropped=_int(diagnostics.get("frames_dropped")),
        node_local_p99_ms=float(diagnostics["local_latency_p99_ms"]) if diagnostics.get("local_latency_p99_ms")
        else None,
        latency_p50_ms=percentile(latency, 50), latency_p99_ms=percentile(latency, 99),
        latency_max_ms=max(latency, default=None),
        e2e_p50_ms=percentile(list(e2e.values()), 50), e2e_p99_ms=percentile(list(e2e.values()), 99),
        e2e_max_ms=max(e2e.values(), default=None),
        fault_start=fault_start if run.actions else None, fault_end=fault_end if run.actions else None,
        first_local_after_fault_ms=(local_after[0]["t"] - fault_start) * 1000 if local_after else None,
        first_hit_e2e_ms=e2e[id(hit)] if hit else None,
        first_hit_answered_ms=(hit["answered_at"] - _stamp(hit)) * 1000 if hit else None,
        first_hit_node_ms=(hit["answered_at"] - hit["received_at"]) * 1000 if hit and hit.get("received_at")
        else None,
        first_hit_backend=hit["backend"] if hit else None,
        fault_latency_max_ms=max(after, default=None),
        back_to_edge_ms=(back["t"] - fault_end) * 1000 if back else None,
        edge_fraction=sum(r["backend"] == "edge" for r in results) / len(results) if results else 0.0,
        min_local_dwell_ms=min(dwell, default=None), returns_to_edge=len(dwell),
        spurious_failovers=_failovers_between(by_kind.get("backend", []), run.t0, fault_start),
        top1=_accuracy(pairs["all"]), top1_edge=_accuracy(pairs["edge"]), top1_local=_accuracy(pairs["local"]),
        backends=dict(Counter(r["backend"] for r in results)),
        edge_failures=dict(Counter(r["edge_failure"] for r in results if r.get("edge_failure"))),
        machine_stall_max_ms=max((ms for _, ms in run.machine_stalls), default=0.0),
    )


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _failovers_between(backend_records: list[dict], start: float, end: float) -> int:
    """Switches from edge to local received in [start, end): with a healthy link, each is a false alarm."""
    previous, count = None, 0
    for record in backend_records:
        if previous == "edge" and record["backend"] == "local" and start <= record["t"] < end:
            count += 1
        previous = record["backend"]
    return count


def local_dwells(event_records: list[dict], t0: float) -> list[float]:
    """Milliseconds from each failover (edge -> local) to the next return to the edge, for
    failovers after t0. Timed by the router's own event stamps: the receive times of the
    ~/backend messages would add DDS transport jitter to a bound the router holds exactly."""
    dwells, left_edge = [], None
    for record in sorted(event_records, key=lambda r: r["t"]):
        if record["previous"] == "edge" and record["state"] == "local" and left_edge is None:
            left_edge = record["t"]
        elif record["state"] == "edge" and left_edge is not None:
            if left_edge >= t0:
                dwells.append((record["t"] - left_edge) * 1000)
            left_edge = None
    return dwells


@dataclass(frozen=True)
class Bounds:
    """The bounds a run is held to, for its settings (docs/FAULTS.md)."""

    blackhole_ms: float  # deadline (hedge_after when hedging) + local p99 + 10 ms
    refused_ms: float  # one frame period
    recovery_ms: float  # probe period * recovery probes + 1 s
    min_dwell_ms: float  # hysteresis: no return to the edge sooner than this after a failover


def bounds(run: RunRecord, metrics: ScenarioMetrics, local_p99_ms: float) -> Bounds:
    """`local_p99_ms` is measured in the test setup; when the node measured a higher p99 for the
    same model during the run (the CPU is shared with the edge, the camera and the recorder),
    that one is the model's p99 under these conditions and is used instead."""
    c = run.config
    local_p99_ms = max(local_p99_ms, metrics.node_local_p99_ms or 0.0)
    waits_ms = c.router_value("hedge_after_ms") or c.router_value("deadline_ms")  # hedging answers sooner
    return Bounds(blackhole_ms=waits_ms + local_p99_ms + 10.0,
                  refused_ms=1000.0 / c.rate_hz,
                  recovery_ms=c.router_value("probe_period_ms") * c.router_value("recovery_probes") + 1000.0,
                  min_dwell_ms=c.router_value("probe_period_ms") * c.router_value("recovery_probes"))


def violations(m: ScenarioMetrics, b: Bounds) -> list[str]:
    """Each way this run missed its bounds, in words (empty: all met)."""
    problems = []
    if m.lost or m.duplicated or m.out_of_order:
        problems.append(f"{m.lost} lost, {m.duplicated} duplicated, {m.out_of_order} out of order")
    # A node from before received_at (--node-command) is held to the stricter stamp-based time.
    hit_ms = m.first_hit_node_ms if m.first_hit_node_ms is not None else m.first_hit_answered_ms
    if m.fault_class == BLACKHOLE and (hit_ms is None or hit_ms > b.blackhole_ms):
        problems.append(f"first frame after a black hole answered in {hit_ms} ms > {b.blackhole_ms:.1f}")
    if m.fault_class in (BLACKHOLE, REFUSED) and m.fault_latency_max_ms is not None \
            and m.fault_latency_max_ms > b.blackhole_ms:
        problems.append(f"router latency {m.fault_latency_max_ms:.1f} ms during the fault > {b.blackhole_ms:.1f}")
    if m.fault_class == REFUSED and (hit_ms is None or hit_ms > b.refused_ms):
        problems.append(f"first frame after a refusal answered in {hit_ms} ms > {b.refused_ms:.1f}")
    if m.back_to_edge_ms is None or m.back_to_edge_ms > b.recovery_ms:
        problems.append(f"back to the edge after {m.back_to_edge_ms} ms > {b.recovery_ms:.0f}")
    if m.fault_class == FLAPPING and m.min_local_dwell_ms is not None and m.min_local_dwell_ms < b.min_dwell_ms:
        problems.append(f"returned to the edge {m.min_local_dwell_ms:.0f} ms after a failover < {b.min_dwell_ms:.0f}")
    return problems


def fault_windows(actions: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """When the link or the edge was faulty. Runs that only switch the fault proxy's mode get one
    window per non-pass stretch (the demo's black hole, each flap); others one from first to last action."""
    if not actions:
        return []
    if not all(a.startswith("proxy:") for _, a in actions):
        return [(actions[0][0], actions[-1][0])]
    windows, opened = [], None
    for t, action in actions:
        if action != "proxy:pass" and opened is None:
            opened = t
        elif action == "proxy:pass" and opened is not None:
            windows.append((opened, t))
            opened = None
    return windows + ([(opened, actions[-1][0])] if opened is not None else [])


def plot_timeline(run: RunRecord, metrics: ScenarioMetrics, path: Path) -> Path:
    """Per-frame latency coloured by backend, the active backend, and the fault shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in run.records if r["kind"] == "result"]
    fig, (ax_lat, ax_backend) = plt.subplots(2, 1, sharex=True, figsize=(10, 5), height_ratios=[3, 1])
    for backend, colour in (("edge", "tab:blue"), ("local", "tab:orange"), ("none", "tab:red")):
        chosen = [r for r in results if r["backend"] == backend]
        ax_lat.scatter([_stamp(r) - run.t0 for r in chosen], [r["latency_ms"] for r in chosen], s=6, c=colour,
                       label=f"{backend} ({len(chosen)})")
        ax_backend.scatter([_stamp(r) - run.t0 for r in chosen], [backend] * len(chosen), s=4, c=colour)
    for start, end in fault_windows(run.actions):
        for ax in (ax_lat, ax_backend):
            ax.axvspan(start - run.t0, end - run.t0, color="grey", alpha=0.2)
    for t, action in run.actions:
        ax_lat.axvline(t - run.t0, color="grey", lw=0.5)
        ax_lat.annotate(action, (t - run.t0, ax_lat.get_ylim()[1]), fontsize=6, rotation=90, va="top")
    ax_lat.set_ylabel("router latency (ms)")
    ax_lat.legend(loc="upper right", fontsize=7)
    ax_lat.set_title(f"{run.scenario.name}: {run.scenario.description}", fontsize=9)
    ax_backend.set_xlabel("seconds since the first frame (shaded: fault)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
