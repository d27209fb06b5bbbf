"""report.md and the Pareto plot (accuracy vs size and vs latency) from stage metrics: top-1 for
classifiers, COCO mAP50-95 (and mAP50) for detectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = ("artefact", "top-1", "Δ vs teacher", "params", "non-zero", "MACs", "ONNX bytes", "gzip bytes",
           "coded bytes", "p50/p95 ms 1 thread", "p50/p95 ms 2 threads")
DETECTION_COLUMNS = ("artefact", "mAP50-95", "Δ vs teacher", "mAP50", "params", "MACs", "ONNX bytes",
                     "p50/p95 ms 1 thread", "p50/p95 ms 2 threads")


def is_detection(m: dict[str, Any]) -> bool:
    return "map50_95" in m


def score_of(m: dict[str, Any]) -> float:
    """The headline score in percent: mAP50-95 for a detector, top-1 for a classifier."""
    return m["map50_95"] if is_detection(m) else m["top1"] * 100


def score_text(m: dict[str, Any]) -> str:
    if is_detection(m):
        return f"mAP50-95 {m['map50_95']:.1f}, mAP50 {m['map50']:.1f}"
    return f"top-1 {m['top1']:.2%}"


def _latency(m: dict[str, Any], threads: int) -> str:
    value = m.get(f"latency_ms_{threads}t")
    return f"{value['p50']:.2f} / {value['p95']:.2f}" if value else "–"


def table_row(label: str, m: dict[str, Any], teacher_top1: float) -> str:
    if is_detection(m):  # teacher_top1 is the teacher's mAP50-95 here
        cells = [label, f"{m['map50_95']:.1f}", f"{m['map50_95'] - teacher_top1:+.1f}", f"{m['map50']:.1f}",
                 f"{m['params']:,}", f"{m['macs'] / 1e6:.1f} M" if m.get("macs") else "–", f"{m['bytes']:,}",
                 _latency(m, 1), _latency(m, 2)]
        return "| " + " | ".join(cells) + " |"
    coded = m.get("coded_bytes")
    cells = [label, f"{m['top1']:.2%}", f"{(m['top1'] - teacher_top1) * 100:+.2f} pt", f"{m['params']:,}",
             f"{m['params_nonzero']:,}", f"{m['macs'] / 1e6:.1f} M" if m.get("macs") else "–", f"{m['bytes']:,}",
             f"{m['bytes_gzip']:,}", f"{coded:,}" if coded else "–", _latency(m, 1), _latency(m, 2)]
    return "| " + " | ".join(cells) + " |"


def markdown_table(rows: list[tuple[str, dict[str, Any]]], teacher_top1: float) -> str:
    columns = DETECTION_COLUMNS if rows and is_detection(rows[0][1]) else COLUMNS
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + [table_row(label, m, teacher_top1) for label, m in rows])


def pareto_plot(rows: list[tuple[str, dict[str, Any]]], path: Path, title: str) -> Path:
    """Two panels: top-1 vs model size (log; the coded size where weight sharing gives one) and vs
    1-thread p50 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5 + 0.22 * len(rows)))
    markers = "osD^v<>pP*Xh"
    for ax, key, xlabel in ((axes[0], "bytes", "model bytes (ONNX file; coded size for weight sharing), log"),
                            (axes[1], "latency", "ORT CPU latency p50, batch 1, 1 thread (ms)")):
        for index, (label, m) in enumerate(rows):
            x = m.get("coded_bytes") or m["bytes"] if key == "bytes" else m.get("latency_ms_1t", {}).get("p50")
            if x is not None:
                ax.scatter(x, score_of(m), marker=markers[index % len(markers)], s=45, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("COCO mAP50-95" if rows and is_detection(rows[0][1]) else "top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log")
    axes[0].xaxis.set_minor_formatter(NullFormatter())
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.11 * len(rows) / 5, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(directory: Path, name: str, rows: list[tuple[str, dict[str, Any]]], teacher_top1: float,
                 notes: list[str]) -> Path:
    plot = pareto_plot(rows, directory / "pareto.png", f"{name}: accuracy vs size and latency")
    text = [f"# Compression report: {name}", "", markdown_table(rows, teacher_top1), "",
            f"![Pareto plot]({plot.name})", "", *[f"- {note}" for note in notes], ""]
    path = directory / "report.md"
    path.write_text("\n".join(text))
    return path
