"""The printed markdown: one table per workload, then relay's figures against their targets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Results = dict[str, dict[str, dict[str, Any]]]

# Figures from an earlier run on this machine, shown beside this run's.
REFERENCE: dict[str, dict[str, str]] = {
    "W1": {"node": "17,075", "pysio": "5,803", "bare": "18,065"},
    "W2": {
        "node": "p50 4.0 / p99 57.7 ms, 8.7 CPU-ms/1k",
        "pysio": "saturated",
        "bare": "p50 1.5 / p99 17.9 ms, 7.1 CPU-ms/1k",
    },
    "W3": {"node": "19.6", "pysio": "30.0", "bare": "13.7"},
}

W2_BASE_RATE = 500
W2_P99_TARGET_MS = 25.0
W3_KIB_TARGET = 16.0
W4_TARGET = 50_000
W5_P99_RATIO = 1.2
W5_RSS_TARGET_MIB = 50.0
W1_RATIO = 0.7


def fmt(value: Any, digits: int = 1) -> str:
    """A figure for a table: thousands separated, ``-`` when missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _error_row(system: str, result: dict[str, Any], width: int) -> list[Any] | None:
    if "error" in result:
        return [system, f"error: {result['error']}"] + [None] * (width - 2)
    return None


def _rows(
    results: Results, workload: str, width: int, build: Callable[[str, dict[str, Any]], list[Any]]
) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for system, result in results.get(workload, {}).items():
        error = _error_row(system, result, width)
        rows.append(error if error is not None else build(system, result))
    return rows


def w1_table(results: Results) -> str:
    """W1: ingest throughput and cost."""
    headers = ["system", "req/s", "p50 ms", "p99 ms", "CPU ms/1k req", "non-2xx", "busy %"]
    headers += ["ref req/s"]

    def build(system: str, r: dict[str, Any]) -> list[Any]:
        return [
            system,
            round(r["rps"]),
            r.get("p50_ms"),
            r.get("p99_ms"),
            r["cpu_ms_per_1k_req"],
            r["non_2xx"],
            r["machine_busy_pct"],
            REFERENCE["W1"].get(system),
        ]

    return table(headers, _rows(results, "W1", len(headers), build))


def _step_row(system: str, s: dict[str, Any]) -> list[Any]:
    lat = s["latency_ms"]
    return [
        system,
        s["rate"],
        s["achieved_rate"],
        s["deliveries_per_s"],
        s["rejected"],
        s["loss"],
        s["dups"],
        lat["p50"],
        lat["p90"],
        lat["p99"],
        lat["max"],
        s["server_cpu_ms_per_1k"],
        s["loadgen_cpu_ms_per_1k"],
        s["machine_busy_pct"],
        s["ok"],
    ]


def w2_table(results: Results) -> str:
    """W2: one row per system and rate."""
    headers = ["system", "ev/s", "achieved", "deliv/s", "rejected", "loss", "dups", "p50 ms"]
    headers += ["p90 ms"]
    headers += ["p99 ms", "max ms", "srv CPU ms/1k deliv", "loadgen CPU ms/1k", "busy %", "ok"]
    rows: list[list[Any]] = []
    for system, result in results.get("W2", {}).items():
        error = _error_row(system, result, len(headers))
        if error is not None:
            rows.append(error)
            continue
        rows += [_step_row(system, step) for step in result["steps"]]
    refs = "; ".join(f"{k}: {v}" for k, v in REFERENCE["W2"].items())
    return table(headers, rows) + f"\n\nreference at 500 ev/s (earlier run): {refs}"


def w3_table(results: Results) -> str:
    """W3: idle memory per connection."""
    headers = ["system", "subscribers", "connected", "KiB/conn", "connect s", "broadcast lost"]
    headers += ["ref KiB/conn"]
    rows: list[list[Any]] = []
    for system, result in results.get("W3", {}).items():
        error = _error_row(system, result, len(headers))
        if error is not None:
            rows.append(error)
            continue
        for key in ("idle", "big"):
            if key in result:
                r = result[key]
                lost = r["broadcast"]["lost"] if "broadcast" in r else None
                ref = REFERENCE["W3"].get(system) if key == "idle" else None
                row = [system, r["subscribers"], r["connected"], r["kib_per_conn"]]
                rows.append([*row, r["connect_ms"] / 1000, lost, ref])
    return table(headers, rows)


def w4_table(results: Results) -> str:
    """W4: the publish paths of relay."""
    headers = ["path", "events/s", "errors", "server CPU ms/1k ev", "publisher CPU ms/1k ev"]
    rows: list[list[Any]] = []
    for system, result in results.get("W4", {}).items():
        error = _error_row(system, result, len(headers))
        if error is not None:
            rows.append(error)
            continue
        for path in ("batch", "reporter"):
            r = result[path]
            errors = r.get("failed", 0) + r["errors"]
            client = r["cpuMs"] * 1000 / r["events"] if r["events"] else None
            rows.append(
                [path, round(r["eventsPerSecond"]), errors, r["server_cpu_ms_per_1k"], client]
            )
    return table(headers, rows)


def w5_table(results: Results) -> str:
    """W5: healthy subscribers beside stalled ones."""
    headers = [
        "system",
        "healthy p50",
        "healthy p99",
        "W2 p99",
        "ratio",
        "rejected",
        "loss",
        "dups",
    ]
    headers += ["RSS growth MiB", "stalled closed", "stalled frames", "terminal sessions (min)"]
    headers += ["newest sessions (min)"]

    def build(system: str, r: dict[str, Any]) -> list[Any]:
        lat, stalled = r["latency_ms"], r["stalled"]
        base = w2_p99_at_base(results, system)
        ratio = lat["p99"] / base if lat["p99"] is not None and base else None
        return [
            system,
            lat["p50"],
            lat["p99"],
            base,
            ratio,
            r["rejected"],
            r["loss"],
            r["dups"],
            r["rss_growth_mib"],
            f"{stalled['closed']}/{stalled['subs']}",
            stalled["received"],
            stalled["minTerminalSessions"],
            stalled["minNewestSessions"],
        ]

    return table(headers, _rows(results, "W5", len(headers), build))


def w2_base_step(results: Results, system: str) -> dict[str, Any] | None:
    """The W2 step at 500 ev/s for ``system``, if it ran."""
    result = results.get("W2", {}).get(system, {})
    return next((s for s in result.get("steps", []) if s["rate"] == W2_BASE_RATE), None)


def w2_p99_at_base(results: Results, system: str) -> float | None:
    """The p99 of that step."""
    step = w2_base_step(results, system)
    return step["latency_ms"]["p99"] if step else None


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def _less(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a < b


def targets(results: Results) -> list[list[Any]]:
    """Relay's figures next to each target: [check, figure, target, verdict]."""
    rows: list[list[Any]] = []
    w1 = results.get("W1", {})
    relay_rps = w1.get("relay", {}).get("rps")
    bare_rps = w1.get("bare", {}).get("rps")
    ratio = relay_rps / bare_rps if relay_rps and bare_rps else None
    rows.append(
        [
            "W1 ingest req/s",
            f"{fmt(relay_rps, 0)} ({fmt(ratio, 2)}x bare {fmt(bare_rps, 0)})",
            f"≥ {W1_RATIO}x bare aiohttp",
            None if ratio is None else ratio >= W1_RATIO,
        ]
    )
    step = w2_base_step(results, "relay")
    node_step = w2_base_step(results, "node")
    if step is not None:
        rows.append(
            [
                "W2 @500 loss (+ refused POSTs) / dups",
                f"{step['loss']} (+{step['rejected']}) / {step['dups']}",
                "0 / 0",
                step["loss"] + step["rejected"] == 0 and step["dups"] == 0,
            ]
        )
        p99 = step["latency_ms"]["p99"]
        rows.append(
            [
                "W2 @500 p99 ms",
                fmt(p99),
                f"≤ {W2_P99_TARGET_MS:g}",
                _less(p99, W2_P99_TARGET_MS + 1e-9),
            ]
        )
        node_cpu = node_step["server_cpu_ms_per_1k"] if node_step else None
        rows.append(
            [
                "W2 @500 server CPU ms/1k deliveries",
                f"{fmt(step['server_cpu_ms_per_1k'], 2)} (node {fmt(node_cpu, 2)})",
                "< Node Socket.IO",
                _less(step["server_cpu_ms_per_1k"], node_cpu),
            ]
        )
    w2 = results.get("W2", {})
    relay_max = w2.get("relay", {}).get("max_ok_rate")
    node_max = w2.get("node", {}).get("max_ok_rate")
    rows.append(
        [
            "W2 highest ev/s with p99 < 100 ms",
            f"{fmt(relay_max)} (node {fmt(node_max)})",
            "> Node Socket.IO",
            _less(node_max, relay_max),
        ]
    )
    w3 = results.get("W3", {}).get("relay", {})
    if "idle" in w3:
        kib = w3["idle"]["kib_per_conn"]
        rows.append(
            [
                "W3 KiB per idle connection",
                fmt(kib, 2),
                f"≤ {W3_KIB_TARGET:g}",
                kib <= W3_KIB_TARGET,
            ]
        )
    if "big" in w3:
        big = w3["big"]
        figure = f"{fmt(big['connected'])} connected, broadcast lost {big['broadcast']['lost']}"
        rows.append(
            [
                f"W3 {fmt(big['subscribers'])} on one gateway",
                figure,
                "all connect and receive",
                big["ok"],
            ]
        )
    w4 = results.get("W4", {}).get("relay", {})
    for path in ("batch", "reporter"):
        if path in w4:
            rate = w4[path]["eventsPerSecond"]
            rows.append(
                [f"W4 {path} events/s", fmt(rate, 0), f"≥ {W4_TARGET:,}", rate >= W4_TARGET]
            )
    w5 = results.get("W5", {}).get("relay", {})
    if "latency_ms" in w5:
        p99, base = w5["latency_ms"]["p99"], w2_p99_at_base(results, "relay")
        ratio = p99 / base if p99 is not None and base else None
        rows.append(
            [
                "W5 healthy p99 vs W2 @500",
                f"{fmt(p99)} ms ({fmt(ratio, 2)}x)",
                f"≤ {W5_P99_RATIO}x W2",
                None if ratio is None else ratio <= W5_P99_RATIO,
            ]
        )
        growth = w5["rss_growth_mib"]
        target = f"< {W5_RSS_TARGET_MIB:g}"
        rows.append(["W5 gateway RSS growth MiB", fmt(growth), target, growth < W5_RSS_TARGET_MIB])
        stalled = w5["stalled"]
        sessions = stalled["minNewestSessions"], stalled["minTerminalSessions"]
        rows.append(
            [
                "W5 stalled got newest + terminal per session",
                f"newest {fmt(sessions[0])}, terminal {fmt(sessions[1])} of {w5['sessions']}",
                "all sessions",
                sessions[0] == sessions[1] == w5["sessions"],
            ]
        )
    return [[check, figure, target, _verdict(met)] for check, figure, target, met in rows]


DISTURBED_SHARE = 0.15


def _measured(node: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every measured interval under ``node``, with where it is."""
    if isinstance(node, list):
        return [m for i, item in enumerate(node) for m in _measured(item, f"{path}[{i}]")]
    if not isinstance(node, dict):
        return []
    found = [(path, node)] if "unattributed_cpu_ms" in node else []
    for key, value in node.items():
        found += _measured(value, f"{path}.{key}")
    return found


def disturbances(results: Results, cores: int) -> list[str]:
    """Intervals where CPU went to something other than the processes measured."""
    notes = []
    for path, interval in _measured(results, "results"):
        capacity = interval["wall_ms"] * cores
        share = interval["unattributed_cpu_ms"] / capacity if capacity else 0
        if share > DISTURBED_SHARE:
            seen = ", ".join(
                f"{name} {ms:,.0f} ms" for name, ms in interval["foreign_cpu_ms"].items()
            )
            notes.append(
                f"{path}: {share:.0%} of the machine's CPU went elsewhere ({seen or 'short-lived'})"
            )
    return notes


def render(results: Results, header: str, cores: int) -> str:
    """The whole printed report."""
    sections = [header]
    titles = {
        "W1": ("W1 ingest (wrk, no subscribers)", w1_table),
        "W2": ("W2 fan-out (subscribers over all instances, open-loop POST to A)", w2_table),
        "W3": ("W3 idle memory (subscribers on instance A)", w3_table),
        "W4": ("W4 publish paths (relay)", w4_table),
        "W5": ("W5 slow consumers (10% stalled, 500 ev/s)", w5_table),
    }
    for workload, (title, build) in titles.items():
        if workload in results:
            sections.append(f"### {title}\n\n{build(results)}")
    notes = disturbances(results, cores)
    if notes:
        sections.append(
            "### disturbed intervals (figures there are less reliable)\n\n- " + "\n- ".join(notes)
        )
    check_rows = targets(results)
    if check_rows:
        sections.append(
            "### relay against its targets\n\n"
            + table(["check", "figure", "target", "verdict"], check_rows)
        )
    return "\n\n".join(sections) + "\n"
