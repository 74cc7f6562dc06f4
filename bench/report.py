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

# Every ratio is relay's figure over Node Socket.IO's in the same run.
W1_RPS_RATIO = 1.0
W2_BASE_RATE = 500
W2_BIG_BASE_RATE = 100
W2_CPU_RATIO = 0.6
W2_CPU_STRETCH_RATIO = 0.5
W2_MAX_RATE_RATIO = 2.0
W3_KIB_TARGET = 12.0
W4_BATCH_TARGET = 100_000
W4_REPORTER_TARGET = 50_000
W5_P99_RATIO = 1.2
W5_RSS_TARGET_MIB = 50.0


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


def _step_row(system: str, subscribers: int, s: dict[str, Any]) -> list[Any]:
    lat = s["latency_ms"]
    return [
        system,
        subscribers,
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
    headers = ["system", "subs", "ev/s", "achieved", "deliv/s", "rejected", "loss", "dups"]
    headers += ["p50 ms", "p90 ms"]
    headers += ["p99 ms", "max ms", "srv CPU ms/1k deliv", "loadgen CPU ms/1k", "busy %", "ok"]
    rows: list[list[Any]] = []
    for system, result in results.get("W2", {}).items():
        error = _error_row(system, result, len(headers))
        if error is not None:
            rows.append(error)
            continue
        for ladder in (result, result.get("big")):
            if ladder is not None:
                rows += [_step_row(system, ladder["subscribers"], s) for s in ladder["steps"]]
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


def w6_table(results: Results) -> str:
    """W6: an idle deployment's cost to Redis, per gateway process."""
    headers = ["system", "gateway processes", "Redis cmd/s", "Redis CPU ms/s"]
    headers += ["Redis cmd/s per process", "Redis CPU ms/s per process", "gateways CPU ms/s"]

    def build(system: str, r: dict[str, Any]) -> list[Any]:
        return [
            system,
            r["gateway_processes"],
            r["redis_commands_per_s"],
            r["redis_cpu_ms_per_s"],
            r["redis_commands_per_s_per_process"],
            fmt(r["redis_cpu_ms_per_s_per_process"], 3),
            r["gateway_cpu_ms_per_s"],
        ]

    return table(headers, _rows(results, "W6", len(headers), build))


def w2_step(results: Results, system: str, *, big: bool = False) -> dict[str, Any] | None:
    """The W2 step at the base rate for ``system``: 500 ev/s x 200, or 100 ev/s x 1,000."""
    result = results.get("W2", {}).get(system, {})
    ladder = result.get("big", {}) if big else result
    rate = W2_BIG_BASE_RATE if big else W2_BASE_RATE
    return next((s for s in ladder.get("steps", []) if s["rate"] == rate), None)


def w2_max_rate(results: Results, system: str, *, big: bool = False) -> int | None:
    """The highest W2 rate that passed for ``system``, if its ladder ran."""
    result = results.get("W2", {}).get(system, {})
    ladder = result.get("big", {}) if big else result
    rate = ladder.get("max_ok_rate")
    return None if rate is None else int(rate)


def w2_p99_at_base(results: Results, system: str) -> float | None:
    """The p99 of the 500 ev/s x 200 step."""
    step = w2_step(results, system)
    return step["latency_ms"]["p99"] if step else None


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _at_most(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a <= b


def _get(step: dict[str, Any] | None, *path: str) -> Any:
    node: Any = step
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


Row = list[Any]


def _w1_rows(results: Results) -> list[Row]:
    w1 = results.get("W1", {})
    relay, node = w1.get("relay", {}), w1.get("node", {})
    if "rps" not in relay:
        return []
    rps, node_rps = relay.get("rps"), node.get("rps")
    cpu, node_cpu = relay.get("cpu_ms_per_1k_req"), node.get("cpu_ms_per_1k_req")
    ratio = _ratio(rps, node_rps)
    return [
        [
            "W1 ingest req/s",
            f"{fmt(rps, 0)} ({fmt(ratio, 2)}x node {fmt(node_rps, 0)})",
            f"≥ {W1_RPS_RATIO:.1f}x Node Socket.IO",
            None if ratio is None else ratio >= W1_RPS_RATIO,
        ],
        [
            "W1 server CPU ms/1k requests",
            f"{fmt(cpu, 2)} (node {fmt(node_cpu, 2)})",
            "≤ Node Socket.IO",
            _at_most(cpu, node_cpu),
        ],
    ]


def _w2_rows(results: Results, *, big: bool) -> list[Row]:
    step, node_step = w2_step(results, "relay", big=big), w2_step(results, "node", big=big)
    where = f"@{W2_BIG_BASE_RATE}x1000" if big else f"@{W2_BASE_RATE}x200"
    if step is None:
        return []
    rows: list[Row] = [
        [
            f"W2 {where} loss (+ refused POSTs) / dups",
            f"{step['loss']} (+{step['rejected']}) / {step['dups']}",
            "0 / 0",
            step["loss"] + step["rejected"] == 0 and step["dups"] == 0,
        ]
    ]
    cpu, node_cpu = _get(step, "server_cpu_ms_per_1k"), _get(node_step, "server_cpu_ms_per_1k")
    ratio = _ratio(cpu, node_cpu)
    figure = f"{fmt(cpu, 2)} ({fmt(ratio, 2)}x node {fmt(node_cpu, 2)})"
    for bound, label in ((W2_CPU_RATIO, ""), (W2_CPU_STRETCH_RATIO, " (stretch)")):
        rows.append(
            [
                f"W2 {where} server CPU ms/1k deliveries{label}",
                figure,
                f"≤ {bound:g}x Node Socket.IO",
                None if ratio is None else ratio <= bound,
            ]
        )
    p99, node_p99 = _get(step, "latency_ms", "p99"), _get(node_step, "latency_ms", "p99")
    rows.append(
        [
            f"W2 {where} p99 ms",
            f"{fmt(p99)} (node {fmt(node_p99)})",
            "≤ Node Socket.IO",
            _at_most(p99, node_p99),
        ]
    )
    top, node_top = w2_max_rate(results, "relay", big=big), w2_max_rate(results, "node", big=big)
    subscribers = "x1000" if big else "x200"
    if top is None or node_top is None:
        met = None
    else:
        # Node passing no step at all leaves any passing relay rate ahead.
        met = top >= W2_MAX_RATE_RATIO * node_top and top > 0
    rows.append(
        [
            f"W2 {subscribers} highest ev/s with p99 < 100 ms",
            f"{fmt(top)} (node {fmt(node_top)})",
            f"≥ {W2_MAX_RATE_RATIO:g}x Node Socket.IO",
            met,
        ]
    )
    return rows


def _w3_rows(results: Results) -> list[Row]:
    rows: list[Row] = []
    w3 = results.get("W3", {})
    relay = w3.get("relay", {})
    if "idle" in relay:
        kib = relay["idle"]["kib_per_conn"]
        rows.append(
            [
                "W3 KiB per idle connection",
                fmt(kib, 2),
                f"≤ {W3_KIB_TARGET:g}",
                kib <= W3_KIB_TARGET,
            ]
        )
    if "big" in relay:
        big = relay["big"]
        figure = f"{fmt(big['connected'])} connected, broadcast lost {big['broadcast']['lost']}"
        rows.append(
            [
                f"W3 {fmt(big['subscribers'])} on one gateway",
                figure,
                "all connect and receive",
                big["ok"],
            ]
        )
    sio_kib = _get(w3.get("relay-sio"), "idle", "kib_per_conn")
    node_kib = _get(w3.get("node"), "idle", "kib_per_conn")
    if sio_kib is not None:
        rows.append(
            [
                "W3 relay-sio KiB per idle connection",
                f"{fmt(sio_kib, 2)} (node {fmt(node_kib, 2)})",
                "< Node Socket.IO",
                None if sio_kib is None or node_kib is None else sio_kib < node_kib,
            ]
        )
    sio_cpu = _get(w2_step(results, "relay-sio"), "server_cpu_ms_per_1k")
    node_cpu = _get(w2_step(results, "node"), "server_cpu_ms_per_1k")
    if sio_cpu is not None:
        rows.append(
            [
                f"W2 @{W2_BASE_RATE}x200 relay-sio server CPU ms/1k deliveries",
                f"{fmt(sio_cpu, 2)} (node {fmt(node_cpu, 2)})",
                "< Node Socket.IO",
                None if sio_cpu is None or node_cpu is None else sio_cpu < node_cpu,
            ]
        )
    return rows


def _w4_rows(results: Results) -> list[Row]:
    w4 = results.get("W4", {}).get("relay", {})
    rows: list[Row] = []
    for path, target in (("batch", W4_BATCH_TARGET), ("reporter", W4_REPORTER_TARGET)):
        if path in w4:
            rate = w4[path]["eventsPerSecond"]
            rows.append([f"W4 {path} events/s", fmt(rate, 0), f"≥ {target:,}", rate >= target])
    return rows


def _w5_rows(results: Results) -> list[Row]:
    w5 = results.get("W5", {}).get("relay", {})
    if "latency_ms" not in w5:
        return []
    p99, base = w5["latency_ms"]["p99"], w2_p99_at_base(results, "relay")
    ratio = _ratio(p99, base)
    growth = w5["rss_growth_mib"]
    stalled = w5["stalled"]
    sessions = stalled["minNewestSessions"], stalled["minTerminalSessions"]
    return [
        [
            "W5 healthy p99 vs W2 @500",
            f"{fmt(p99)} ms ({fmt(ratio, 2)}x)",
            f"≤ {W5_P99_RATIO}x W2",
            None if ratio is None else ratio <= W5_P99_RATIO,
        ],
        [
            "W5 gateway RSS growth MiB",
            fmt(growth),
            f"< {W5_RSS_TARGET_MIB:g}",
            growth < W5_RSS_TARGET_MIB,
        ],
        [
            "W5 stalled got newest + terminal per session",
            f"newest {fmt(sessions[0])}, terminal {fmt(sessions[1])} of {w5['sessions']}",
            "all sessions",
            sessions[0] == sessions[1] == w5["sessions"],
        ],
    ]


def targets(results: Results) -> list[list[Any]]:
    """Relay's figures next to each target: [check, figure, target, verdict]."""
    rows = [
        *_w1_rows(results),
        *_w2_rows(results, big=False),
        *_w2_rows(results, big=True),
        *_w3_rows(results),
        *_w4_rows(results),
        *_w5_rows(results),
    ]
    return [[check, figure, target, _verdict(met)] for check, figure, target, met in rows]


def workers_scaling(results: Results) -> list[list[Any]]:
    """One gateway process against ``--workers 2``: [figure, 1 worker, 2 workers, ratio]."""
    rows: list[list[Any]] = []

    def add(label: str, one: float | None, two: float | None, digits: int = 1) -> None:
        if one is not None or two is not None:
            rows.append([label, fmt(one, digits), fmt(two, digits), fmt(_ratio(two, one), 2)])

    w1 = results.get("W1", {})
    add("W1 req/s", _get(w1.get("relay"), "rps"), _get(w1.get("relay-workers"), "rps"), 0)
    add(
        "W1 server CPU ms/1k requests",
        _get(w1.get("relay"), "cpu_ms_per_1k_req"),
        _get(w1.get("relay-workers"), "cpu_ms_per_1k_req"),
        2,
    )
    for big in (False, True):
        where = f"@{W2_BIG_BASE_RATE}x1000" if big else f"@{W2_BASE_RATE}x200"
        one, two = w2_step(results, "relay", big=big), w2_step(results, "relay-workers", big=big)
        add(
            f"W2 {where} server CPU ms/1k deliveries",
            _get(one, "server_cpu_ms_per_1k"),
            _get(two, "server_cpu_ms_per_1k"),
            2,
        )
        add(f"W2 {where} p99 ms", _get(one, "latency_ms", "p99"), _get(two, "latency_ms", "p99"))
        top_one = w2_max_rate(results, "relay", big=big)
        top_two = w2_max_rate(results, "relay-workers", big=big)
        add(f"W2 {where[where.index('x') :]} highest ev/s with p99 < 100 ms", top_one, top_two, 0)
    w6 = results.get("W6", {})
    for key, label, digits in (
        ("redis_commands_per_s_per_process", "W6 idle Redis commands/s per gateway process", 2),
        ("redis_cpu_ms_per_s_per_process", "W6 idle Redis CPU ms/s per gateway process", 3),
        ("redis_commands_per_s", "W6 idle Redis commands/s, whole deployment", 2),
    ):
        add(label, _get(w6.get("relay"), key), _get(w6.get("relay-workers"), key), digits)
    return rows


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
        "W6": ("W6 idle deployment: Redis's cost of the gateways' readers", w6_table),
    }
    for workload, (title, build) in titles.items():
        if workload in results:
            sections.append(f"### {title}\n\n{build(results)}")
    notes = disturbances(results, cores)
    if notes:
        sections.append(
            "### disturbed intervals (figures there are less reliable)\n\n- " + "\n- ".join(notes)
        )
    scaling = workers_scaling(results)
    if scaling:
        sections.append(
            "### relay: one process per gateway against --workers 2\n\n"
            + table(["figure", "1 worker", "2 workers", "2 / 1"], scaling)
        )
    check_rows = targets(results)
    if check_rows:
        sections.append(
            "### relay against its targets\n\n"
            + table(["check", "figure", "target", "verdict"], check_rows)
        )
    return "\n\n".join(sections) + "\n"
