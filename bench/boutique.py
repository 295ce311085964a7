#!/usr/bin/env python3
"""Online Boutique, the whole application, measured: meshrpc in three placements against
the same call graph on tonic (bench/boutique-tonic), at the same offered load.

Run by bench/boutique.sh (which builds the release binaries first). For each pass and
system: start the system's processes on 127.0.0.1, warm up, then run `boutique-load`
(open loop, the upstream mix) against its frontend's HTTP JSON API and read the CPU time
(utime + stime from /proc) of every process of the system over the run. Systems are
interleaved within a pass; figures are medians over the passes.

- meshrpc, all in one process: one.toml, one node; every call between services in process.
- meshrpc, one process per service: each.toml, ten nodes.
- meshrpc, three groups: three.toml, three nodes.
- tonic, one process per service: ten gRPC servers, the frontend an axum HTTP server.

In every system the load generator calls the process that serves the frontend directly
(a meshrpc node answers HTTP on its own port): the same hops on both sides.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
PLACEMENTS = os.path.join(ROOT, "examples", "boutique", "placements")
KINDS = ["index", "set_currency", "browse_product", "add_to_cart", "view_cart", "checkout"]
SERVICES = ["currency", "productcatalog", "cart", "shipping", "payment", "email", "ad", "recommendation",
            "checkout", "frontend"]
CALLS = {  # what each tonic service calls
    "recommendation": ["productcatalog"],
    "checkout": ["cart", "productcatalog", "currency", "shipping", "payment", "email"],
    "frontend": ["currency", "productcatalog", "cart", "recommendation", "shipping", "checkout", "ad"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, wait_for="listening on", timeout=30):
    """Starts a process; waits for a line starting with `wait_for`; returns (proc, line)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"{args[0]} exited before `{wait_for}`")
        if line.startswith(wait_for):
            return proc, line.strip()
    raise SystemExit(f"{args[0]}: no `{wait_for}` within {timeout} s")


def wait_line(proc, text, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("a node exited before it was ready")
        if line.strip() == text:
            return
    raise SystemExit(f"no `{text}` within {timeout} s")


def meshrpc_system(placement, tag):
    """Starts every group of `placement` as its own process; returns (procs, frontend URL)."""
    path = os.path.join(PLACEMENTS, placement)
    with open(path, "rb") as f:
        count = len(tomllib.load(f)["groups"])
    procs, seed, frontend = [], None, None
    for group in range(count):
        args = [os.path.join(BIN, "boutique"), "--placement", path, "--group", str(group),
                "--listen-addr", "127.0.0.1:0", "--tag", tag]
        if seed:
            args += ["--nodes", seed]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        serves = proc.stdout.readline().strip()  # "ADDR serves a, b"
        addr = serves.split(" ")[0]
        wait_line_prefix(proc, "listening on")
        seed = seed or addr
        if "frontend" in serves.split(" serves ")[1].split(", "):
            frontend = addr
        procs.append(proc)
    for proc in procs:
        wait_line(proc, "ready")
    return procs, f"http://{frontend}"


def wait_line_prefix(proc, prefix, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line:
            raise SystemExit("a node exited")
    raise SystemExit(f"no `{prefix}`")


def tonic_system():
    ports = {s: free_port() for s in SERVICES}
    procs = []
    for service in SERVICES:  # dependencies first
        args = [os.path.join(BIN, "boutique-tonic"), service, "--listen", f"127.0.0.1:{ports[service]}"]
        for peer in CALLS.get(service, []):
            args += ["--peer", f"{peer}=127.0.0.1:{ports[peer]}"]
        proc, _ = start(args)
        procs.append(proc)
    return procs, f"http://127.0.0.1:{ports['frontend']}"


def cpu_seconds(procs):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in procs:
        with open(f"/proc/{p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def load(url, rate, seconds):
    out = subprocess.run(
        [os.path.join(BIN, "boutique-load"), "--url", url, "--rate", str(rate), "--duration-s", str(seconds),
         "--users", "200"],
        capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if line.startswith('{"summary"'):
            return json.loads(line)["summary"]
    raise SystemExit("boutique-load printed no summary")


def measure(name, system, rate, seconds, warmup):
    procs, url = system()
    try:
        load(url, rate, warmup)
        before = cpu_seconds(procs)
        summary = load(url, rate, seconds)
        cpu = cpu_seconds(procs) - before
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    done = summary["ok"] + summary["failed"]
    return {
        "name": name,
        "failed": summary["failed"],
        "dropped": summary["dropped"],
        "cpu_per_1000": cpu / max(done, 1) * 1000,
        "kinds": {k: (v["p50_ms"], v["p99_ms"]) for k, v in summary["by_kind"].items()},
        "requests": done,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    systems = [
        ("meshrpc, one process", lambda: meshrpc_system("one.toml", f"bq1-{os.getpid()}")),
        ("meshrpc, process per service", lambda: meshrpc_system("each.toml", f"bqe-{os.getpid()}")),
        ("meshrpc, three groups", lambda: meshrpc_system("three.toml", f"bq3-{os.getpid()}")),
        ("tonic, process per service", tonic_system),
    ]
    runs = {name: [] for name, _ in systems}
    for n in range(args.passes):
        for name, system in systems:
            r = measure(name, system, args.rate, args.seconds, args.warmup)
            runs[name].append(r)
            print(f"pass {n + 1}: {name}: {r['requests']} requests, {r['failed']} failed, "
                  f"{r['cpu_per_1000']:.3f} CPU-s per 1,000", file=sys.stderr)
    med = {}
    for name, rs in runs.items():
        med[name] = {
            "cpu": statistics.median(r["cpu_per_1000"] for r in rs),
            "failed": sum(r["failed"] for r in rs),
            "kinds": {k: (statistics.median(r["kinds"][k][0] for r in rs if k in r["kinds"]),
                          statistics.median(r["kinds"][k][1] for r in rs if k in r["kinds"])) for k in KINDS},
        }
    names = [name for name, _ in systems]
    tonic = med[names[-1]]
    print(f"\nOnline Boutique at {args.rate:.0f} requests/s (open loop, the upstream mix), {args.seconds:.0f} s, "
          f"median of {args.passes} interleaved passes; latency p50 / p99 in ms")
    print(f"{'request':<16}" + "".join(f" | {n:>29}" for n in names))
    for k in KINDS:
        row = f"{k:<16}"
        for n in names:
            p50, p99 = med[n]["kinds"][k]
            row += f" | {p50:>13.2f} / {p99:>13.2f}"
        print(row)
    print(f"{'CPU-s / 1,000':<16}" + "".join(f" | {med[n]['cpu']:>29.3f}" for n in names))
    print(f"{'failed':<16}" + "".join(f" | {med[n]['failed']:>29}" for n in names))
    failed = {n: med[n]["failed"] for n in names if med[n]["failed"]}
    print("\nRatios to tonic (tonic / meshrpc: above 1, meshrpc is better)")
    for n in names[:-1]:
        p50s = [tonic["kinds"][k][0] / med[n]["kinds"][k][0] for k in KINDS if med[n]["kinds"][k][0] > 0]
        p99s = [tonic["kinds"][k][1] / med[n]["kinds"][k][1] for k in KINDS if med[n]["kinds"][k][1] > 0]
        print(f"  {n:<30} p50 {min(p50s):.2f}-{max(p50s):.2f}x (checkout {tonic['kinds']['checkout'][0] / med[n]['kinds']['checkout'][0]:.2f}x), "
              f"p99 {min(p99s):.2f}-{max(p99s):.2f}x, CPU per request {tonic['cpu'] / med[n]['cpu']:.2f}x")
    if failed:
        raise SystemExit(f"requests failed: {failed}: the figures above do not compare like with like")


if __name__ == "__main__":
    main()
