"""What the benchmark shows: the tables, the targets, the JSON document and the plot."""

from __future__ import annotations

import json
import statistics
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .runner import MIB, paired_ratio, placement_label

# The rows the targets speak of: framecodec compiled, over plain TCP.
FRAMECODEC_ROWS = {"framecodec": "codec loop", "selector": "selector", "threads": "threads"}

Row = Dict[str, Any]


def format_size(size: int) -> str:
    if size >= MIB:
        return f"{size // MIB} MiB"
    if size >= 1024:
        return f"{size // 1024} KiB"
    return f"{size} B"


def _num(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(
    heading: Tuple[str, ...], widths: Tuple[int, ...], lines: Iterable[Tuple[str, ...]]
) -> List[str]:
    """Left-aligned first columns (negative widths), right-aligned numbers."""

    def cells(values: Tuple[str, ...]) -> str:
        return "  ".join(
            f"{value:<{-width}}" if width < 0 else f"{value:>{width}}"
            for value, width in zip(values, widths)
        ).rstrip()

    out = [cells(heading), "  ".join("-" * abs(width) for width in widths)]
    out += [cells(line) for line in lines]
    return out


# A figure whose repetitions' interquartile range is more than this much of
# its median is flagged: the machine was too busy for it to mean much.
UNSTABLE = 0.20


def _spread(row: Row) -> str:
    value = row.get("spread")
    if value is None:
        return "-"
    return f"{value:.0%}" + ("!" if value > UNSTABLE else "")


def unstable_lines(results: Dict[str, Any]) -> List[str]:
    flagged = [
        row
        for section in ("throughput", "latency", "concurrency")
        for row in results.get(section, [])
        if (row.get("spread") or 0) > UNSTABLE
    ]
    if not flagged:
        return []
    return [
        "",
        f"Warning: {len(flagged)} figure(s) marked '!' spread over {UNSTABLE:.0%} of their median "
        "(the interquartile range of",
        "their repetitions): the machine was busy; rerun with more --reps or on a quieter "
        "machine before trusting them.",
    ]


def _error_line(row: Row) -> str:
    return f"failed: {row['error']}"


def throughput_tables(rows: List[Row]) -> List[str]:
    out: List[str] = []
    for transport, title in (("tcp", "TCP loopback"), ("unix", "a Unix socket")):
        mine = [row for row in rows if row["transport"] == transport]
        if not mine:
            continue
        out += ["", f"One-way throughput over {title} (MB/s of payload)"]
        lines = []
        previous = None
        for row in mine:
            size = format_size(row["size"]) if row["size"] != previous else ""
            if previous is not None and row["size"] != previous:
                lines.append(("",) * 7)
            previous = row["size"]
            if row["error"]:
                lines.append((size, row["label"], _error_line(row), "", "", "", ""))
                continue
            lines.append(
                (
                    size,
                    row["label"],
                    _num(row["frames_per_s"], ",.0f"),
                    _num(row["mb_per_s"], ",.1f"),
                    _spread(row),
                    _ratio(row["vs_naive"]),
                    _ratio(row["vs_raw"]),
                )
            )
        out += _table(
            ("size", "contender", "frames/s", "MB/s", "spread", "x naive", "x raw"),
            (-6, -30, 12, 9, 6, 8, 7),
            lines,
        )
    return out


def latency_tables(rows: List[Row]) -> List[str]:
    out: List[str] = []
    groups: Dict[Tuple[int, Optional[Tuple[int, ...]]], List[Row]] = {}
    for row in rows:
        groups.setdefault((row["size"], _cpus(row)), []).append(row)
    for (size, cpus), members in groups.items():
        where = placement_label(cpus)
        out += [
            "",
            f"Round trip, one client, {format_size(size)} messages, TCP loopback, {where}"
            " (microseconds)",
        ]
        lines = []
        for row in members:
            if row["error"]:
                lines.append((row["label"], _error_line(row), "", "", "", ""))
                continue
            lines.append(
                (
                    row["label"],
                    _num(row["p50_us"], ",.1f"),
                    _spread(row),
                    _num(row["p99_us"], ",.1f"),
                    _ratio(row["vs_raw"]),
                    _ratio(row["vs_naive"]),
                )
            )
        out += _table(
            ("contender", "p50", "spread", "p99", "p50 x raw", "p50 x naive"),
            (-30, 9, 6, 9, 10, 12),
            lines,
        )
    return out


def concurrency_table(rows: List[Row]) -> List[str]:
    if not rows:
        return []
    clients = rows[0]["clients"]
    out = ["", f"{clients} concurrent clients, 64-byte echo, TCP loopback (requests/s)"]
    lines = []
    for row in rows:
        if row["error"]:
            lines.append((row["label"], _error_line(row), "", "", ""))
            continue
        lines.append(
            (
                row["label"],
                _num(row["requests_per_s"], ",.0f"),
                _spread(row),
                _ratio(row["vs_naive"]),
                _ratio(row["vs_raw"]),
            )
        )
    return out + _table(
        ("server", "requests/s", "spread", "x naive", "x raw"), (-30, 11, 6, 8, 7), lines
    )


def memory_table(rows: List[Row]) -> List[str]:
    if not rows:
        return []
    out = [
        "",
        "Receiver memory, 1 MiB frames over TCP: peak RSS of a fresh receiving process,",
        "and how far above its baseline (its RSS once ready to receive) it went",
    ]
    lines = []
    for row in rows:
        if row["error"]:
            lines.append((row["label"], str(row["frames"]), _error_line(row), "", ""))
            continue
        lines.append(
            (
                row["label"],
                str(row["frames"]),
                f"{row['baseline_mib']:.1f}",
                f"{row['peak_mib']:.1f}",
                f"{row['excess_frames']:.1f}",
            )
        )
    return out + _table(
        ("receiver", "frames", "baseline MiB", "peak MiB", "above baseline, MiB"),
        (-30, 6, 12, 9, 19),
        lines,
    )


# -- targets ----------------------------------------------------------------------------


def _target(
    text: str, values: Dict[str, Optional[float]], good: Callable[[float], bool], spec: str
) -> Row:
    measured = {key: value for key, value in values.items() if value is not None}
    verdicts = {key: good(value) for key, value in measured.items()}
    if not verdicts:
        status = "not measured"
    elif all(verdicts.values()):
        status = "met"
    elif any(verdicts.values()):
        status = "partly met"
    else:
        status = "MISSED"
    return {
        "target": text,
        "status": status,
        "values": measured,
        "met": verdicts,
        "shown": ", ".join(
            f"{FRAMECODEC_ROWS.get(key, key)} {format(value, spec)}"
            f"{'' if verdicts[key] else ' (missed)'}"
            for key, value in measured.items()
        ),
    }


def _find(rows: List[Row], **match: Any) -> Optional[Row]:
    for row in rows:
        if all(row.get(key) == value for key, value in match.items()) and not row["error"]:
            return row
    return None


def _versus(rows: List[Row], other: Optional[Row], key: str) -> Dict[str, Optional[float]]:
    """Each framecodec row's ratio to ``other``, paired by repetition."""
    values: Dict[str, Optional[float]] = {}
    for contender in FRAMECODEC_ROWS:
        row = _find(rows, contender=contender, **_same_group(other))
        if row is None or other is None:
            continue
        values[contender] = paired_ratio(row[key], other[key])
    return values


def _same_group(row: Optional[Row]) -> Dict[str, Any]:
    if row is None:
        return {}
    return {k: row[k] for k in ("transport", "size", "cpus") if k in row}


def _cpus(row: Row) -> Optional[Tuple[int, ...]]:
    return tuple(row["cpus"]) if row.get("cpus") is not None else None


def evaluate_targets(results: Dict[str, Any]) -> List[Row]:
    out: List[Row] = []
    throughput = [row for row in results.get("throughput", []) if row["transport"] == "tcp"]
    sizes = {row["size"] for row in throughput}
    for size in (16, 256):
        if size not in sizes:
            continue
        naive = _find(throughput, contender="naive", size=size)
        zmq = _find(throughput, contender="zmq", size=size)
        out.append(
            _target(
                f"{size} B frames: at least 20x the naive loop",
                _versus(throughput, naive, "samples"),
                lambda v: v >= 20,
                ".1f",
            )
        )
        out.append(
            _target(
                f"{size} B frames: at least 5x pyzmq PUSH/PULL",
                _versus(throughput, zmq, "samples"),
                lambda v: v >= 5,
                ".1f",
            )
        )
    for size, floor in ((4096, 0.80), (64 * 1024, 0.95), (MIB, 0.95)):
        if size not in sizes:
            continue
        raw = _find(throughput, contender="raw", size=size)
        out.append(
            _target(
                f"{format_size(size)} frames: at least {floor:.0%} of raw sockets",
                _versus(throughput, raw, "samples"),
                lambda v, floor=floor: v >= floor,  # type: ignore[misc]
                ".0%",
            )
        )
    latency = [row for row in results.get("latency", []) if row["size"] == 64]
    # The unpinned targets are judged where the pair is on two CPUs for sure
    # (see runner.py: left free, placement is chance); without that run, free.
    apart = [row for row in latency if row.get("cpus") and len(set(row["cpus"])) == 2]
    plain = apart or [row for row in latency if row.get("cpus") is None]
    where = ", server and client on two CPUs" if apart else ""
    if plain:
        raw = _find(plain, contender="raw")
        out.append(
            _target(
                f"64 B round trip{where}: p50 within 1.3x of raw sockets",
                _versus(plain, raw, "samples"),
                lambda v: v <= 1.3,
                ".2f",
            )
        )
        for other in ("mp", "asyncio"):
            row = _find(plain, contender=other)
            label = "multiprocessing.connection" if other == "mp" else "asyncio streams"
            out.append(
                _target(
                    f"64 B round trip{where}: p50 lower than {label} (ratio < 1)",
                    _versus(plain, row, "samples"),
                    lambda v: v < 1,
                    ".2f",
                )
            )
    pinned = [row for row in latency if row.get("cpus") and len(set(row["cpus"])) == 1]
    if pinned:
        raw = _find(pinned, contender="raw")
        out.append(
            _target(
                "64 B round trip pinned to one CPU: p50 within 1.15x of raw sockets",
                _versus(pinned, raw, "samples"),
                lambda v: v <= 1.15,
                ".2f",
            )
        )
    concurrency = results.get("concurrency", [])
    if concurrency:
        selector = _find(concurrency, contender="selector")
        asyncio_row = _find(concurrency, contender="asyncio")
        ratio = None
        if selector is not None and asyncio_row is not None:
            ratio = paired_ratio(selector["samples"], asyncio_row["samples"])
        out.append(
            _target(
                "64 clients: selector server serves more requests/s than asyncio streams",
                {"selector": ratio},
                lambda v: v > 1,
                ".2f",
            )
        )
    memory = results.get("memory", [])
    if memory:
        values = {}
        for key in FRAMECODEC_ROWS:
            rows = [row for row in memory if row["contender"] == key and not row["error"]]
            if rows:
                values[key] = max(row["excess_frames"] for row in rows)
        out.append(
            _target(
                "1 MiB frames: receiver RSS under baseline + 4 MiB (any stream length)",
                values,
                lambda v: v < 4,
                ".1f",
            )
        )
    return out


def targets_table(targets: List[Row]) -> List[str]:
    if not targets:
        return []
    out = ["", "Targets (framecodec rows over TCP: codec loop, selector and threads servers)"]
    for target in targets:
        out.append(f"  {target['status']:<12} {target['target']}")
        if target["shown"]:
            out.append(f"  {'':<12}   {target['shown']}")
    return out


# -- the whole report -------------------------------------------------------------------


def render(results: Dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"framecodec network benchmark, {meta['date']}: Python {meta['python']} on "
        f"{meta['system']} {meta['machine']}, {meta['cpus']} CPUs; framecodec "
        f"{meta['version']} ({meta['implementation']}); {meta['mode']} mode, "
        f"{results['seconds']:.0f} s",
        f"Each figure is the median of {meta['reps']} repetitions, its spread their "
        "interquartile range over it; 'x naive'",
        "and 'x raw' are medians of the ratios measured within each repetition, where every "
        "contender runs back to back.",
    ]
    if results.get("interrupted"):
        lines.append("INTERRUPTED: only the figures measured before Ctrl-C are shown.")
    for key, reason in meta["absent"].items():
        lines.append(f"Not measured: {key}: {reason}")
    lines += throughput_tables(results.get("throughput", []))
    lines += latency_tables(results.get("latency", []))
    lines += concurrency_table(results.get("concurrency", []))
    lines += memory_table(results.get("memory", []))
    lines += targets_table(results.get("targets", []))
    lines += unstable_lines(results)
    return "\n".join(lines)


def write_json(results: Dict[str, Any], path: str) -> None:
    with open(path, "w") as out:
        json.dump(results, out, indent=1)
        out.write("\n")


def _quartiles(row: Row) -> Tuple[float, float]:
    """The first and third quartiles of a throughput row, in MB/s."""
    samples = [rate * row["size"] / 1e6 for rate in row.get("samples") or ()]
    if len(samples) < 3:
        return (row["mb_per_s"], row["mb_per_s"])
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return (q1, q3)


def plot(results: Dict[str, Any], path: str) -> None:
    """Throughput against frame size for every contender, one panel per transport."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    rows = [row for row in results.get("throughput", []) if not row["error"]]
    transports = [t for t in ("tcp", "unix") if any(row["transport"] == t for row in rows)]
    if not transports:
        raise ValueError("no throughput was measured: nothing to plot")
    # One colour per contender in every panel; the references dashed.
    labels = list(dict.fromkeys(row["label"] for row in rows))
    palette = plt.get_cmap("tab20")
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # the strong shades first
    styles: Dict[str, Dict[str, Any]] = {
        label: {"color": palette(order[index % 20])} for index, label in enumerate(labels)
    }
    for row in rows:
        if row["contender"] == "raw":
            styles[row["label"]] = {"color": "black", "linestyle": "--"}
        elif row["contender"] == "raw-tls":
            styles[row["label"]] = {"color": "grey", "linestyle": "--"}
    figure, axes = plt.subplots(
        1, len(transports), figsize=(6.5 * len(transports) + 3, 5.5), squeeze=False, sharey=True
    )
    for ax, transport in zip(axes[0], transports):
        mine = [row for row in rows if row["transport"] == transport]
        for label in labels:
            points = sorted(
                (row["size"], row["mb_per_s"], _quartiles(row))
                for row in mine
                if row["label"] == label
            )
            if points:
                # Error bars: the repetitions' interquartile range.
                low = [max(0.0, p[1] - p[2][0]) for p in points]
                high = [max(0.0, p[2][1] - p[1]) for p in points]
                ax.errorbar(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    yerr=[low, high],
                    marker="o",
                    capsize=2,
                    label=label,
                    **styles[label],
                )
        sizes = sorted({row["size"] for row in mine})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([format_size(size) for size in sizes])
        ax.set_xlabel("frame size")
        ax.set_title("TCP loopback" if transport == "tcp" else "Unix socket")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("MB/s of payload (median)")
    handles, names = [], []
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if name not in names:
                handles.append(handle)
                names.append(name)
    figure.legend(handles, names, loc="center right", fontsize="small")
    meta = results["meta"]
    figure.suptitle(
        f"framecodec {meta['version']} ({meta['implementation']}) one-way throughput, "
        f"{meta['date']}: Python {meta['python']}, {meta['system']} {meta['machine']}, "
        f"{meta['cpus']} CPUs; bars: interquartile range of {meta['reps']} repetitions",
        fontsize="medium",
    )
    figure.tight_layout(rect=(0, 0, 1 - 2.4 / (6.5 * len(transports) + 3), 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
