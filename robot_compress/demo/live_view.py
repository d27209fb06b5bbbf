"""What the demo shows while it runs, computed from the recorder's JSON lines as they arrive.

`DemoState` folds records into running figures (backend, router state, transitions with their
reasons (the router's own events), latency per backend, frames in/out, accuracy against ground truth). `render` draws them
with rich on a terminal; `plain_line` is the same in one log line for CI and `| cat`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from robot_compress.faults.analysis import frame_key
from robot_compress.runtime.latency_stats import percentile


@dataclass
class Transition:
    t: float
    previous: str
    state: str
    reason: str

    def text(self, t0: float) -> str:
        return f"{self.t - t0:6.1f} s  {self.previous} -> {self.state}  ({self.reason})"


@dataclass
class DemoState:
    t0: float = field(default_factory=time.time)
    published: int = 0
    results: int = 0
    link: str = "pass"
    state: str = "-"
    backend: str = "-"
    latency: dict[str, list[float]] = field(default_factory=lambda: {"edge": [], "local": []})
    correct: dict[str, int] = field(default_factory=lambda: {"edge": 0, "local": 0})
    judged: dict[str, int] = field(default_factory=lambda: {"edge": 0, "local": 0})
    transitions: list[Transition] = field(default_factory=list)
    _truth: dict[tuple[int, int], int] = field(default_factory=dict)
    _pending: dict[tuple[int, int], dict] = field(default_factory=dict)  # results waiting for their truth
    log: deque[str] = field(default_factory=lambda: deque(maxlen=8))

    def add(self, record: dict) -> None:
        kind = record["kind"]
        if kind == "image":
            self.published += 1
        elif kind == "truth":
            key = frame_key(record)
            self._truth[key] = record["class_id"]
            if key in self._pending:
                self._judge(self._pending.pop(key))
        elif kind == "event" and record["previous"] is not None:
            reason = record["reason"] + (f": {record['detail']}" if record.get("detail") else "")
            self.transitions.append(Transition(record["t"], record["previous"], record["state"], reason))
            self.log.append(self.transitions[-1].text(self.t0))
        elif kind == "result":
            self._result(record)

    def _result(self, record: dict) -> None:
        self.results += 1
        backend = record["backend"]
        self.state, self.backend = record["state"], backend
        self.latency.setdefault(backend, []).append(record["latency_ms"])
        if frame_key(record) in self._truth:
            self._judge(record)
        else:
            self._pending[frame_key(record)] = record

    def _judge(self, record: dict) -> None:
        if self._truth[frame_key(record)] < 0:
            return  # no class to judge against (video frames, detection photos)
        backend = record["backend"]
        self.judged[backend] = self.judged.get(backend, 0) + 1
        self.correct[backend] = self.correct.get(backend, 0) + int(record.get("class_id") == self._truth[frame_key(record)])

    def link_changed(self, mode: str, t: float) -> None:
        self.link = mode
        self.log.append(f"{t - self.t0:6.1f} s  link: {mode}")

    def accuracy(self, backend: str | None = None) -> float | None:
        names = [backend] if backend else list(self.judged)
        judged = sum(self.judged.get(n, 0) for n in names)
        return sum(self.correct.get(n, 0) for n in names) / judged if judged else None

    def served(self, backend: str) -> int:
        return len(self.latency.get(backend, []))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(values: list[float], q: float) -> str:
    p = percentile(values, q)
    return "-" if p is None else f"{p:.1f}"


def render(s: DemoState, title: str) -> Panel:
    """The live terminal view."""
    status = Table.grid(padding=(0, 2))
    colour = "green" if s.backend == "edge" else "yellow"
    link_colour = "green" if s.link == "pass" else "red"
    status.add_row("backend", f"[bold {colour}]{s.backend}[/]", "router state", s.state,
                   "link", f"[{link_colour}]{s.link}[/]")
    status.add_row("frames in", str(s.published), "results", str(s.results),
                   "not answered yet", str(max(0, s.published - s.results)))
    status.add_row("last transition", s.transitions[-1].text(s.t0) if s.transitions else "-", "", "", "", "")

    figures = Table(show_header=True, header_style="bold", box=None)
    for column in ("backend", "frames", "latency p50 ms", "p99 ms", "top-1 vs ground truth"):
        figures.add_column(column, justify="right")
    for name in ("edge", "local"):
        figures.add_row(name, str(s.served(name)), _ms(s.latency.get(name, []), 50),
                        _ms(s.latency.get(name, []), 99), _pct(s.accuracy(name)))
    figures.add_row("all", str(s.results), _ms([x for v in s.latency.values() for x in v], 50),
                    _ms([x for v in s.latency.values() for x in v], 99), _pct(s.accuracy()))
    log = "\n".join(s.log) or "(no transitions yet)"
    return Panel(Group(status, "", figures, "", Panel(log, title="transitions and link changes")),
                 title=title, subtitle=f"{time.time() - s.t0:5.1f} s")


def plain_line(s: DemoState) -> str:
    """The same figures on one line, for logs."""
    return (f"[{time.time() - s.t0:6.1f} s] backend={s.backend} state={s.state} link={s.link} "
            f"in={s.published} out={s.results} edge={s.served('edge')} local={s.served('local')} "
            f"p99_edge_ms={_ms(s.latency.get('edge', []), 99)} p99_local_ms={_ms(s.latency.get('local', []), 99)} "
            f"top1={_pct(s.accuracy())}")
