"""Figures to report for ``bench.soap``: rows, ratios, target checks, the printed table."""

from __future__ import annotations

import datetime

from bench.common import LOADGEN_CORE, SERVER_CORE

OURS_SCENARIOS = ("devinfo-digest", "devinfo-wsse", "getservices", "gsdt")
NAIVE_SCENARIOS = ("devinfo-noauth", "getservices", "gsdt")
#: The naive peer has no auth, so both authenticated cells compare with its bare call.
PEER_OF = {
    "devinfo-digest": "devinfo-noauth",
    "devinfo-wsse": "devinfo-noauth",
    "getservices": "getservices",
    "gsdt": "gsdt",
    "devinfo-noauth": "devinfo-noauth",
}
#: What each implementation runs for one row of the table ("static" is the ceiling).
ROWS = (
    {"ours": "devinfo-digest", "naive": "devinfo-noauth", "static": "devinfo-digest"},
    {"ours": "devinfo-wsse", "static": "devinfo-wsse"},
    {"ours": "getservices", "naive": "getservices", "static": "getservices"},
    {"ours": "gsdt", "naive": "gsdt", "static": "gsdt"},
)
#: The load generator does the same work for these as for a plain GetSystemDateAndTime.
CEILING_OF = {"devinfo-noauth": "gsdt"}
TARGETS = {
    "startup_s_max": 1.5,
    "authenticated_rps_min": 2500,
    "p99_ms_at_8_clients_max": 10.0,
    "rps_at_64_over_rps_at_8_min": 0.9,
    "errors_at_64_clients_max": 0,
}
AUTH_SCENARIOS = ("devinfo-digest", "devinfo-wsse")
# The load generator's CPU share above which its figures are suspect.
LOADGEN_BUSY = 0.9
# Share of a benchmark core used by other processes above which a cell is marked noisy.
NOISY = 0.15


def spread_text(r: dict) -> str:
    """How far apart the repeats' req/s were, as a share of the best."""
    rates = [x["rps"] for x in r.get("repeats") or () if x.get("rps")]
    if len(rates) < 2:
        return "-"
    return f"{(max(rates) - min(rates)) / max(rates) * 100:.0f}%"


def is_noisy(r: dict) -> bool:
    return max((r.get("other_load") or {}).values(), default=0.0) > NOISY


def other_text(r: dict) -> str:
    o = r.get("other_load")
    if not o:
        return "-"
    flag = "!" if max(o.values()) > NOISY else ""
    return f"{o['server_core'] * 100:.0f}/{o['loadgen_core'] * 100:.0f}%{flag}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def build_report(args, machine, ceiling, ours, naive, startup, ours_error) -> dict:
    rows = []
    levels = args.clients
    scenarios = OURS_SCENARIOS if ours is not None else NAIVE_SCENARIOS
    for scenario in scenarios:
        for clients in levels:
            key = f"{scenario}/{clients}"
            peer_key = f"{PEER_OF[scenario]}/{clients}"
            ceil_key = f"{CEILING_OF.get(scenario, scenario)}/{clients}"
            o = (ours or {}).get(key)
            n = (naive or {}).get(peer_key)
            c = ceiling.get(ceil_key)
            rows.append(
                {
                    "scenario": scenario,
                    "clients": clients,
                    "ours": o,
                    "naive_scenario": PEER_OF[scenario],
                    "naive": n,
                    "rps_ratio_ours_over_naive": ratio(o and o["rps"], n and n["rps"]),
                    "p99_ratio_ours_over_naive": ratio(o and o["p99_ms"], n and n["p99_ms"]),
                    "loadgen_ceiling": c,
                }
            )
    report = {
        "benchmark": "soap",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "parameters": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "clients": levels,
            "startup_runs": args.startup_runs,
            "repeat": args.repeat,
            "quiet_wait_s": args.quiet_wait,
            "only": args.only,
            "pinned": not args.no_pin,
            "server_core": SERVER_CORE if not args.no_pin else None,
            "loadgen_core": LOADGEN_CORE if not args.no_pin else None,
            "connections": "keep-alive, one request in flight per connection",
            "errors_counted": "non-200, body without the expected element, connection loss, "
            "failed set-up, no answer 5 s after the window; over set-up, warm-up and window, "
            "summed over all repeats",
            "latency": "from writing the request to the last byte of the answer; a Digest "
            "stale=true retry is included in its request's latency",
        },
        "machine": machine,
        "peer": {
            "name": "naive aiohttp + zeep (bench/naive_server.py)",
            "note": "the peer has no authentication; authenticated cells compare with its "
            "unauthenticated GetDeviceInformation",
        },
        "targets": TARGETS,
        "startup": startup,
        "cells": rows,
        "loadgen_ceiling": ceiling,
    }
    report["loadgen_capacity_estimate_rps"] = loadgen_capacity(ceiling)
    if ours_error:
        report["ours_unavailable"] = ours_error
    report["target_check"] = check_targets(report)
    return report


def loadgen_capacity(ceiling: dict[str, dict]) -> dict[str, int]:
    """What one load generator process could do on its core, per scenario: the rate it
    reached against the trivial handler divided by the share of its core that took."""
    capacity: dict[str, int] = {}
    for key, c in ceiling.items():
        scenario = key.split("/")[0]
        if c.get("loadgen_cpu"):
            est = round(c["rps"] / c["loadgen_cpu"])
            capacity[scenario] = max(capacity.get(scenario, 0), est)
    return capacity


def check_targets(report: dict) -> dict:
    ours = {(r["scenario"], r["clients"]): r["ours"] for r in report["cells"] if r["ours"]}
    out: dict = {}
    s = report["startup"].get("ours")
    if s:
        worst = max(s["median_s"], s.get("restart_median_s", 0))
        out["startup"] = {"value_s": worst, "met": worst < TARGETS["startup_s_max"]}
    for scenario in AUTH_SCENARIOS:
        best = max((r["rps"] for (sc, c), r in ours.items() if sc == scenario), default=None)
        if best is not None:
            out[f"{scenario}_best_rps"] = {
                "value": best,
                "met": best >= TARGETS["authenticated_rps_min"],
            }
    p99s = {sc: r["p99_ms"] for (sc, c), r in ours.items() if c == 8}
    if p99s:
        worst = max(p99s.values())
        out["p99_ms_at_8"] = {
            "value": worst,
            "per_scenario": p99s,
            "met": worst < TARGETS["p99_ms_at_8_clients_max"],
        }
    hold = {}
    for (sc, c), r in ours.items():
        if c == 64 and (sc, 8) in ours:
            hold[sc] = {
                "rps_64_over_8": ratio(r["rps"], ours[(sc, 8)]["rps"]),
                "errors_64": r["errors"],
            }
    if hold:
        out["at_64_clients"] = {
            "per_scenario": hold,
            "met": all(
                (h["rps_64_over_8"] or 0) >= TARGETS["rps_at_64_over_rps_at_8_min"]
                and h["errors_64"] <= TARGETS["errors_at_64_clients_max"]
                for h in hold.values()
            ),
        }
    return out


def print_report(report: dict) -> None:
    header = (
        "scenario",
        "clients",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "naive req/s",
        "ratio",
        "lg ceiling",
        "srv cpu",
        "lg cpu",
        "other",
        "spread",
    )
    lines = [header]
    for r in report["cells"]:
        o, n, c = r["ours"], r["naive"], r["loadgen_ceiling"]
        # Without our figures the rows are the peer's own.
        src = o or (n if not any(x["ours"] for x in report["cells"]) else None)
        lines.append(
            (
                r["scenario"],
                str(r["clients"]),
                f"{src['rps']:.0f}" if src else "-",
                f"{src['p50_ms']:.2f}" if src else "-",
                f"{src['p99_ms']:.2f}" if src else "-",
                str(src["errors"]) if src else "-",
                f"{n['rps']:.0f}" if n and src is not n else "-",
                f"{r['rps_ratio_ours_over_naive']:.2f}" if r["rps_ratio_ours_over_naive"] else "-",
                f"{c['rps']:.0f}" if c else "-",
                pct(src.get("server_cpu")) if src else "-",
                pct(src.get("loadgen_cpu")) if src else "-",
                other_text(src) if src else "-",
                spread_text(src) if src else "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print(
            "  ".join(
                cell.ljust(w) if j == 0 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "(ratio = ours / naive req/s; naive has no auth, so devinfo-digest and devinfo-wsse "
        "compare with its bare GetDeviceInformation; lg ceiling = load generator against a "
        "trivial aiohttp handler; srv/lg cpu = CPU of the server / load generator process "
        "in the window; other = CPU taken by other processes on the server/load-generator "
        f"core, '!' above {NOISY:.0%}: that cell ran on a busy machine; with --repeat, req/s "
        "is the fastest quiet repeat and spread = (max - min) / max req/s over the repeats)"
    )

    for impl in ("ours", "naive"):
        s = report["startup"].get(impl)
        if s:
            extra = (
                f", restart on existing data {s['restart_median_s']:.3f} s"
                if "restart_median_s" in s
                else ""
            )
            print(
                f"start-up {impl}: median {s['median_s']:.3f} s over {s['runs']} runs "
                f"(samples {s['samples_s']}{extra}; first cold start {s['cold_first_s']:.3f} s)"
            )
    for impl in ("ours", "naive"):
        s = report["startup"].get(impl)
        if s and s.get("stop_after_sigterm_max_s", 0) > 2:
            print(
                f"WARNING: {impl} took {s['stop_after_sigterm_max_s']:.1f} s to go after SIGTERM "
                "in a start-up run (5 s means it ignored it and was killed)"
            )
    so, sn = report["startup"].get("ours"), report["startup"].get("naive")
    if so and sn:
        print(f"start-up ratio ours/naive: {so['median_s'] / sn['median_s']:.2f} (lower is better)")

    if report.get("ours_unavailable"):
        print(f"ours: NOT MEASURED — {report['ours_unavailable'].splitlines()[-1]}")

    t = report["target_check"]
    marks = {True: "met", False: "MISSED"}
    if t:
        print("targets (not asserted):")
    if "startup" in t:
        print(f"  start-up < 1.5 s: {t['startup']['value_s']:.3f} s  {marks[t['startup']['met']]}")
    for scenario in AUTH_SCENARIOS:
        k = f"{scenario}_best_rps"
        if k in t:
            print(
                f"  >= 2500 authenticated req/s ({scenario}, best level): "
                f"{t[k]['value']:.0f}  {marks[t[k]['met']]}"
            )
    if "p99_ms_at_8" in t:
        print(
            f"  p99 < 10 ms at 8 clients (worst scenario): {t['p99_ms_at_8']['value']:.2f} ms"
            f"  {marks[t['p99_ms_at_8']['met']]}"
        )
    if "at_64_clients" in t:
        h = t["at_64_clients"]["per_scenario"]
        detail = ", ".join(f"{k} {v['rps_64_over_8']}x/{v['errors_64']} err" for k, v in h.items())
        print(
            f"  64 clients hold throughput (>= 0.9x of 8) with 0 errors: {detail}"
            f"  {marks[t['at_64_clients']['met']]}"
        )

    for r in report["cells"]:
        for impl in ("ours", "naive"):
            x = r[impl]
            if x and (x.get("loadgen_cpu") or 0) >= LOADGEN_BUSY:
                print(
                    f"WARNING: load generator at {pct(x['loadgen_cpu'])} CPU for {impl} "
                    f"{r['scenario']}/{r['clients']}: that figure may be the load "
                    "generator's limit, not the server's"
                )
    sizes = {}
    for r in report["cells"]:
        if r["ours"] and r["naive"] and r["scenario"] not in sizes:
            sizes[r["scenario"]] = (
                r["ours"].get("response_body_bytes"),
                r["naive"].get("response_body_bytes"),
            )
    if sizes:
        print(
            "answer sizes, ours/naive bytes: "
            + ", ".join(f"{k} {a}/{b}" for k, (a, b) in sizes.items())
            + (
                " (the naive GetServices lists the same services as ours)"
                if report["peer"].get("getservices_list", {}).get("mirrors_ours")
                else ""
            )
        )
    noisy = sorted(
        {
            f"{impl} {r[impl]['scenario']}/{r['clients']}"
            for r in report["cells"]
            for impl in ("ours", "naive")
            if r[impl] and is_noisy(r[impl])
        }
    )
    if noisy:
        print(
            f"WARNING: other processes used the benchmark cores during {len(noisy)} cell(s) "
            f"({', '.join(noisy[:6])}{', ...' if len(noisy) > 6 else ''}); re-run on a quiet machine "
            "before trusting those figures"
        )
    for r in report["cells"]:
        for impl in ("ours", "naive"):
            x = r[impl]
            if x and (x.get("reconnects") or x.get("stale_retries")):
                print(
                    f"note: {impl} {x['scenario']}/{r['clients']}: {x.get('reconnects')} "
                    f"reconnects ({x.get('server_connection_close')} answers with Connection: "
                    f"close), {x.get('stale_retries')} Digest stale=true retries"
                )
    capacity = report.get("loadgen_capacity_estimate_rps") or loadgen_capacity(
        report.get("loadgen_ceiling") or {}
    )
    if capacity:
        print(
            "load generator capacity on one core (ceiling req/s / its CPU share): "
            + ", ".join(f"{k} ~{v}" for k, v in capacity.items())
        )
    ceilings = [r["loadgen_ceiling"] for r in report["cells"] if r["loadgen_ceiling"]]
    if ceilings:
        busy = [c for c in ceilings if (c.get("loadgen_cpu") or 0) >= LOADGEN_BUSY]
        if busy:
            print(
                "note: against the trivial handler the load generator itself saturated its "
                "core in some cells; one Python process on one core cannot go faster there"
            )
        else:
            print(
                "note: against the trivial handler the trivial server, not the load "
                "generator, was the limit (load generator below "
                f"{LOADGEN_BUSY:.0%} CPU), so the ceiling is a lower bound"
            )
