"""SOAP request throughput, latency and start-up time of the device service.

The server under test runs pinned to core 0, the load generator (``bench.loadgen``, one
process, bare asyncio) to core 1. Each cell is N keep-alive connections with one request
in flight each, a warm-up, then a fixed measured window. The comparison peer is
``bench.naive_server`` (aiohttp + zeep, no auth), measured in the same run for the
unauthenticated operations; the load generator's own ceiling is measured against a
trivial aiohttp handler (``bench.static_server``). The three take turns cell by cell, so
that drift in the machine's speed does not masquerade as a difference between them.
Start-up is the wall time from spawning a server to its first answered request.

    .venv/bin/python -m bench.soap [--seconds 5] [--warmup 1] [--clients 1,8,64]
        [--startup-runs 3] [--only ours|naive] [--no-pin] [--repeat 1] [--selftest]

On a shared machine, ``--repeat 3`` keeps, per cell, the fastest sample that ran without
other processes on the two cores (the ``other`` column shows what they took).

Prints a table and writes ``bench/results/soap.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lxml import etree

from bench import naive_server
from bench.common import (
    HOST,
    LOADGEN_CORE,
    REPO,
    RESULTS,
    SERVER_CORE,
    ServerProcess,
    cores_busy_s,
    free_port,
    http_exchange,
    machine_info,
    pin_prefix,
    wait_until_answers,
)
from bench.loadgen import plain_request
from bench.soap_report import (
    CEILING_OF,
    NAIVE_SCENARIOS,
    OURS_SCENARIOS,
    ROWS,
    build_report,
    is_noisy,
    other_text,
    pct,
    print_report,
    ratio,
)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.pin = not args.no_pin
        # Never starting with "-", which a command line would take for an option.
        self.password = "bench-" + secrets.token_hex(8)
        self.servers: list[ServerProcess] = []
        #: Our GetServices list, for the naive peer to answer with the same one.
        self.services_file: Path | None = None
        self.services: list | None = None
        # ONVIF_NVR_* from the caller's shell would silently change what is measured.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ONVIF_NVR_")}

    # -- servers

    def _spawn(
        self, argv: list[str], name: str, env: dict[str, str] | None = None
    ) -> ServerProcess:
        log = self.tmp / f"{name}.log"
        server = ServerProcess(pin_prefix(SERVER_CORE, self.pin) + argv, log, env or self.env)
        self.servers.append(server)
        return server

    def stop(self, server: ServerProcess) -> float:
        t0 = time.perf_counter()
        server.stop()
        self.servers.remove(server)
        return time.perf_counter() - t0

    def stop_all(self) -> None:
        for server in list(self.servers):
            self.stop(server)

    def ours_argv(self, data_dir: Path, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "onvif_nvr",
            "serve",
            "--data-dir",
            str(data_dir),
            "--http-port",
            str(port),
            "--rtsp-port",
            str(free_port()),
            "--bind",
            HOST,
            "--admin-password",
            self.password,
        ]

    def spawn(self, impl: str, port: int, data_dir: Path | None = None) -> ServerProcess:
        if impl == "ours":
            if data_dir is None:
                data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=self.tmp))
            return self._spawn(self.ours_argv(data_dir, port), "ours")
        if impl == "naive":
            argv = [sys.executable, "-m", "bench.naive_server", "--port", str(port)]
            if self.services_file is not None:
                argv += ["--services", str(self.services_file)]
            return self._spawn(argv, "naive")
        argv = [sys.executable, "-m", "bench.static_server", "--port", str(port)]
        if impl == "verify":
            argv.append("--verify-auth")
            return self._spawn(argv, impl, dict(self.env, BENCH_PASSWORD=self.password))
        return self._spawn(argv, impl)

    def start_ready(self, impl: str) -> tuple[ServerProcess, int]:
        port = free_port()
        server = self.spawn(impl, port)
        wait_until_answers(
            server,
            port,
            plain_request(HOST, port, "GetSystemDateAndTime"),
            b"GetSystemDateAndTimeResponse",
        )
        return server, port

    # -- measurements

    def startup(self, impl: str) -> dict:
        """Median wall time from spawn to the first answered GetSystemDateAndTime."""
        runs = self.args.startup_runs
        probe = b"GetSystemDateAndTimeResponse"
        out: dict = {"runs": runs}
        # One untimed start first, so that byte-code compilation and a cold page cache
        # are not counted; it is reported as cold_first_s.
        samples: dict[str, list[float]] = {"cold": [], "fresh": [], "restart": []}
        stops: list[float] = []
        first_dir = Path(tempfile.mkdtemp(prefix="data-", dir=self.tmp))
        plan = [("cold", None)] + [("fresh", None)] * runs
        if impl == "ours":
            # A box restarting on its existing data directory.
            plan += [("restart", first_dir)] * runs
        for kind, data_dir in plan:
            port = free_port()
            if kind == "cold" and impl == "ours":
                data_dir = first_dir
            server = self.spawn(impl, port, data_dir)
            try:
                t = wait_until_answers(
                    server, port, plain_request(HOST, port, "GetSystemDateAndTime"), probe
                )
            finally:
                stops.append(self.stop(server))
            samples[kind].append(t)
        out["cold_first_s"] = round(samples["cold"][0], 3)
        out["samples_s"] = [round(x, 3) for x in samples["fresh"]]
        out["median_s"] = round(statistics.median(samples["fresh"]), 3)
        if samples["restart"]:
            out["restart_samples_s"] = [round(x, 3) for x in samples["restart"]]
            out["restart_median_s"] = round(statistics.median(samples["restart"]), 3)
        out["stop_after_sigterm_max_s"] = round(max(stops), 3)
        return out

    def loadgen(self, port: int, scenario: str, clients: int, server_pid: int | None) -> dict:
        argv = pin_prefix(LOADGEN_CORE, self.pin) + [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--port",
            str(port),
            "--scenario",
            scenario,
            "--clients",
            str(clients),
            "--seconds",
            str(self.args.seconds),
            "--warmup",
            str(self.args.warmup),
        ]
        if server_pid is not None:
            argv += ["--server-pid", str(server_pid)]
        env = dict(self.env, BENCH_PASSWORD=self.password)
        timeout = self.args.warmup + self.args.seconds + 60
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode}):\n{proc.stderr}")
        return json.loads(proc.stdout)

    def mirror_services(self, port: int) -> None:
        """Record our GetServices list so that the naive peer renders the same answer."""
        status, body = http_exchange(port, plain_request(HOST, port, "GetServices"))
        if status != 200:
            return
        services = []
        for svc in etree.fromstring(body).iter("{http://www.onvif.org/ver10/device/wsdl}Service"):
            fields = {etree.QName(e).localname: (e.text or "") for e in svc.iter()}
            path = "/" + fields.get("XAddr", "").split("/", 3)[-1]
            services.append(
                [fields.get("Namespace", ""), path, int(fields["Major"]), int(fields["Minor"])]
            )
        self.services = services
        self.services_file = self.tmp / "services.json"
        self.services_file.write_text(json.dumps(services))

    def sample(self, port: int, scenario: str, clients: int, server_pid: int) -> dict:
        """One run of one cell, started once the two cores are quiet (or a time limit
        passed), with the CPU that other processes took on them during the window."""
        waited = wait_for_quiet(self.args.quiet_wait) if self.pin else 0.0
        r = self.loadgen(port, scenario, clients, server_pid)
        r["waited_for_quiet_s"] = round(waited, 2)
        if self.pin and r.get("cores_busy"):
            busy = {int(k): v for k, v in r["cores_busy"].items()}
            r["other_load"] = {
                "server_core": round(max(0.0, busy[SERVER_CORE] - (r["server_cpu"] or 0)), 3),
                "loadgen_core": round(max(0.0, busy[LOADGEN_CORE] - r["loadgen_cpu"]), 3),
            }
        return r

    def measure(self, impls: list[str], static_scenarios: set[str]) -> dict[str, dict[str, dict]]:
        """Every cell of every implementation, interleaved.

        All servers run at once, pinned to the same core; only the one being measured is
        busy. For each row and concurrency the implementations take turns, ``--repeat``
        times, so that slow drift of the machine's speed (a shared host) hits ours, the
        peer and the ceiling alike and their ratio stays meaningful.
        """
        servers: dict[str, tuple[ServerProcess, int]] = {}
        samples: dict[tuple[str, str, int], list[dict]] = {}
        try:
            for impl in impls:  # ours first: the peer mirrors its GetServices list
                servers[impl] = self.start_ready(impl)
                if impl == "ours":
                    self.mirror_services(servers[impl][1])
            for row in ROWS:
                for clients in self.args.clients:
                    turn = [
                        (impl, row[impl])
                        for impl in impls
                        if row.get(impl)
                        and (impl != "static" or row[impl] in static_scenarios)
                        and (impl, row[impl], clients) not in samples
                    ]
                    for _ in range(self.args.repeat):
                        for impl, scenario in turn:
                            server, port = servers[impl]
                            if not server.alive():
                                print(
                                    f"  {impl} server died; restarting. Log tail:\n"
                                    + server.log_tail(),
                                    file=sys.stderr,
                                )
                                self.stop(server)
                                servers[impl] = server, port = self.start_ready(impl)
                            r = self.sample(port, scenario, clients, server.pid)
                            r["server_alive_after"] = server.alive()
                            samples.setdefault((impl, scenario, clients), []).append(r)
                            _progress(impl, r)
        finally:
            for server, _ in servers.values():
                self.stop(server)
        results: dict[str, dict[str, dict]] = {impl: {} for impl in impls}
        for (impl, scenario, clients), runs in samples.items():
            results[impl][f"{scenario}/{clients}"] = keep_best(runs)
        return results


def keep_best(runs: list[dict]) -> dict:
    """The fastest run without other load on the benchmark cores (the fastest of all if
    none was quiet); ``errors`` counts the failures of every run, ``repeats`` lists them."""
    best = dict(max(runs, key=lambda r: (not is_noisy(r), r.get("rps", 0))))
    best["errors_kept_sample"] = best["errors"]
    best["errors"] = sum(r["errors"] for r in runs)
    best["repeats"] = [
        {k: r.get(k) for k in ("rps", "p50_ms", "p99_ms", "errors", "other_load")} for r in runs
    ]
    return best


def wait_for_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """Wait until both cores are less than ``threshold`` busy over 0.3 s; give up at ``limit_s``."""
    t0 = time.perf_counter()
    while True:
        b0 = cores_busy_s()
        time.sleep(0.3)
        b1 = cores_busy_s()
        busy = max((b1[c] - b0[c]) / 0.3 for c in (SERVER_CORE, LOADGEN_CORE))
        waited = time.perf_counter() - t0
        if busy < threshold or waited >= limit_s:
            return waited


def _progress(impl: str, r: dict) -> None:
    print(
        f"  {impl:<7} {r['scenario']:<15} c={r['clients']:<3} {r.get('rps', 0):>9.1f} req/s"
        f"  p99 {r.get('p99_ms', 0):>7.2f} ms  errors {r['errors']}"
        f"  srv cpu {pct(r.get('server_cpu'))}  lg cpu {pct(r.get('loadgen_cpu'))}"
        f"  other {other_text(r)}",
        file=sys.stderr,
        flush=True,
    )


def ours_available() -> str | None:
    """None if ``python -m onvif_nvr serve --help`` works, else why not."""
    try:
        p = subprocess.run(
            [sys.executable, "-m", "onvif_nvr", "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return repr(e)
    if p.returncode != 0:
        return (p.stderr or p.stdout).strip()[-800:]
    return None


def selftest(bench: Bench) -> int:
    """Check the load generator against the auth-verifying stand-in and the naive peer."""
    failures = 0
    for impl, scenarios in (("verify", OURS_SCENARIOS), ("naive", NAIVE_SCENARIOS)):
        server, port = bench.start_ready(impl)
        try:
            for scenario in scenarios:
                for clients in (1, 8):
                    r = bench.loadgen(port, scenario, clients, server.pid)
                    _progress(impl, r)
                    if r["errors"] or not r["requests"]:
                        failures += 1
                        print(json.dumps(r, indent=1), file=sys.stderr)
        finally:
            bench.stop(server)
    print("selftest", "FAILED" if failures else "passed")
    return 1 if failures else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.soap",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measured window per cell")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up per cell")
    p.add_argument("--clients", default="1,8,64", help="concurrency levels, comma-separated")
    p.add_argument("--startup-runs", type=int, default=3)
    p.add_argument("--only", choices=("ours", "naive"), default=None)
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument(
        "--selftest",
        action="store_true",
        help="check the load generator against stand-ins, 1 s cells",
    )
    p.add_argument("--output", type=Path, default=RESULTS / "soap.json")
    p.add_argument("--show", action="store_true", help="print the table of --output and exit")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each cell this many times and keep the fastest sample without other load",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each cell, wait up to this long for other load on the two cores to end",
    )
    args = p.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if not args.no_pin:
        if shutil.which("taskset") is None:
            p.error("taskset not found; use --no-pin")
        if len(os.sched_getaffinity(0)) < 2 or not {
            SERVER_CORE,
            LOADGEN_CORE,
        } <= os.sched_getaffinity(0):
            p.error(f"needs cores {SERVER_CORE} and {LOADGEN_CORE}; use --no-pin")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show:
        print_report(json.loads(args.output.read_text()))
        return 0
    if args.selftest:
        args.seconds, args.warmup = 1.0, 0.3

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    machine = machine_info()
    if not args.no_pin:
        # Keep this process's own polling off the server's core.
        os.sched_setaffinity(0, {LOADGEN_CORE})

    with tempfile.TemporaryDirectory(prefix="bench-soap-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            if args.selftest:
                return selftest(bench)
            return run(bench, args, machine)
        finally:
            bench.stop_all()


def run(bench: Bench, args: argparse.Namespace, machine: dict) -> int:
    ours_error = None
    if args.only != "naive":
        ours_error = ours_available()
        if ours_error:
            print(
                f"our server is not available: {ours_error.splitlines()[-1] if ours_error else ''}",
                file=sys.stderr,
            )

    want_ours = args.only != "naive" and not ours_error
    want_naive = args.only != "ours"
    startup: dict = {}
    if want_ours:
        print("ours: start-up", file=sys.stderr)
        try:
            startup["ours"] = bench.startup("ours")
        except RuntimeError as e:
            ours_error = str(e)
            want_ours = False
            print(f"ours failed: {e}", file=sys.stderr)
    if want_naive:
        print("naive: start-up", file=sys.stderr)
        startup["naive"] = bench.startup("naive")

    static_scenarios = set(OURS_SCENARIOS) if want_ours else set()
    if want_naive:
        static_scenarios |= {CEILING_OF.get(s, s) for s in NAIVE_SCENARIOS}
    impls = ["ours"] * want_ours + ["naive"] * want_naive + ["static"]
    print("throughput: " + ", ".join(impls) + " in turn", file=sys.stderr)
    results = bench.measure(impls, static_scenarios)
    ours, naive, ceiling = results.get("ours"), results.get("naive"), results["static"]
    if "ours" in startup and "naive" in startup:
        startup["ratio_ours_over_naive"] = ratio(
            startup["ours"]["median_s"], startup["naive"]["median_s"]
        )

    report = build_report(args, machine, ceiling, ours, naive, startup, ours_error)
    report["peer"]["getservices_list"] = {
        "mirrors_ours": bench.services is not None,
        "services": bench.services if bench.services is not None else naive_server.SERVICES,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.output.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=1) + "\n")
    tmp_out.replace(args.output)
    print_report(report)
    print(
        f"wrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}"
    )
    return 1 if ours_error and args.only != "naive" else 0


if __name__ == "__main__":
    sys.exit(main())
