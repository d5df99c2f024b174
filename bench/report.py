#!/usr/bin/env python3
"""Turns bench/run.sh's raw results (results.tsv, runs/*.json, swarm.tsv) into report.md,
per-load latency plots (loadgen compare), and a short summary on stdout.
Exit status 1 when a setup that should have run produced no numbers for a load."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict

LOADS = [
    ("a", "(a) h2 multiplexed closed loop, -c 4 -m 32"),
    ("b", "(b) HTTP/1.1 keep-alive closed loop, -c 64"),
    ("c-h2", "(c) open loop at 50 % of direct h2 capacity, -c 4 -m 32"),
    ("c-h1", "(c) open loop at 50 % of direct HTTP/1.1 capacity, -c 64"),
    ("c-h2-low", "(c') open loop at 50 % of the slowest setup's h2 capacity, -c 4 -m 32"),
    ("c-h1-low", "(c') open loop at 50 % of the slowest setup's HTTP/1.1 capacity, -c 64"),
    ("d", "(d) connection churn: one request per new HTTP/1.1 connection, -c 32"),
    ("e-down", "(e) bulk download: one response body streamed to the client"),
    ("e-up", "(e) bulk upload: one request body streamed to the service"),
    ("f", "(f) many hosts: h2 -c 4 -m 32 through one responder, 1 host vs many hosts"),
]
SETUP_ORDER = ["direct", "rtun", "rtun-pgo", "rtun-tls", "nginx", "nginx-2hop", "rathole", "rathole-nodelay"]
PEERS = ["nginx", "nginx-2hop", "rathole", "rathole-nodelay"]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_us(us):
    if us is None:
        return "–"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def fmt_num(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def fmt_bps(x):
    if x is None:
        return "–"
    return f"{x / (1 << 20):,.0f} MiB/s"


def shard_ticks(field):
    """The responder's CPU ticks per shard over a run ("T0,T1" in results.tsv), or None."""
    try:
        ticks = [int(t) for t in field.split(",")] if field.strip() else []
    except ValueError:
        return None
    return ticks if ticks and all(t >= 0 for t in ticks) else None


def fmt_split(ticks):
    """Each shard's share of the responder's shard CPU in one run, in percent: "61/39"."""
    total = sum(ticks) if ticks else 0
    if not total:
        return "–"
    pct = [round(100 * t / total) for t in ticks]
    if len(pct) > 1:
        pct[-1] = 100 - sum(pct[:-1])  # shares that add up to 100 after rounding
    return "/".join(str(x) for x in pct)


def split_line(label, runs):
    """"LABEL: responder shard CPU split per round: 50/50, 52/48" for runs that recorded the
    split (their "shards"), or None when none did."""
    if not any(r["shards"] for r in runs):
        return None
    return f"{label}: responder shard CPU split per round: " + ", ".join(fmt_split(r["shards"]) for r in runs)


def parse_client(client, path):
    """What one cross-check client run measured: req/s, successful requests, errors and, where
    the tool reports them, p50/p99 latency in µs. None when the output has no result."""
    import re

    if client == "loadgen":
        try:
            j = json.load(open(path[: -len(".txt")] + ".json"))
        except (OSError, ValueError):
            return None
        lat = j["latency_us"]["corrected"]
        return {"rps": j["rps"], "ok": j["ok"], "errors": j["errors_total"], "p50": lat["p50"], "p99": lat["p99"]}
    try:
        text = open(path).read()
    except OSError:
        return None
    if client == "h2load":
        fin = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
        req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
        st = re.search(r"status codes: (\d+) 2xx", text)
        if not (fin and req and st):
            return None
        ok = int(st.group(1))
        errors = int(req.group(5)) + int(req.group(6)) + int(req.group(7)) + max(0, int(req.group(4)) - ok)
        return {"rps": float(fin.group(1)), "ok": ok, "errors": errors, "p50": None, "p99": None}
    if client == "wrk":
        n = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
        if not (n and rps):
            return None
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        bad = int(non2xx.group(1)) if non2xx else 0
        errors = bad + (sum(int(g) for g in sock.groups()) if sock else 0)
        unit = {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}

        def pct(p):
            m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
            return float(m.group(1)) * unit[m.group(2)] if m else None

        return {"rps": float(rps.group(1)), "ok": int(n.group(1)) - bad, "errors": errors, "p50": pct(50), "p99": pct(99)}
    return None


SYSCALL_TARGETS = {"a": 0.5, "b": 1.5}  # issue 10: rtun syscalls per request, both processes


def read_perf(res):
    """The --perf windows (perf.tsv, perf/*): per run, syscalls and task-clock per process,
    the requests of the window and where that count came from. [] without --perf."""
    import re

    path = os.path.join(res, "perf.tsv")
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        next(f)
        for line in f:
            rnd, load, setup, pfx, pids, roles, jpath = line.rstrip("\n").split("\t")
            pids, roles = pids.split(), roles.split()
            role_of = dict(zip(pids, roles))
            tid_pid = {}
            try:
                for l in open(pfx + ".tasks"):
                    pid, tid = l.split()
                    tid_pid[tid] = pid
            except (OSError, ValueError):
                pass
            # perf stat --per-thread -x, : "comm-tid,count,unit,event,..." ("<not counted>"
            # when a thread did not run in the window).
            per = {r: defaultdict(float) for r in roles}
            stat_ok = False
            try:
                for l in open(pfx + ".stat"):
                    if not l.strip() or l.startswith("#"):
                        continue
                    fs = l.rstrip("\n").split(",")
                    if len(fs) < 4:
                        continue
                    tid = fs[0].rsplit("-", 1)[-1]
                    role = role_of.get(tid_pid.get(tid, tid), "other")
                    per.setdefault(role, defaultdict(float))
                    try:
                        v = float(fs[1])
                    except ValueError:
                        v = 0.0  # <not counted> (a thread that did not run) / <not supported>
                    else:
                        # counted at all: a window that was never enabled has only <not counted>
                        stat_ok = stat_ok or fs[3] == "raw_syscalls:sys_enter"
                    per[role][fs[3]] += v
            except OSError:
                pass
            # perf_window's stamps: LABEL_begin T, LABEL_c0/c1 T0 T1 COUNT, LABEL_end T
            marks = {}
            try:
                for l in open(pfx + ".windows"):
                    fs = l.split()
                    if len(fs) == 4 and fs[0].endswith(("_c0", "_c1")):
                        marks[fs[0]] = (float(fs[1]), float(fs[2]), None if fs[3] == "-" else int(fs[3]))
                    elif len(fs) == 2 and fs[0].endswith(("_begin", "_end", "_exit")):
                        marks[fs[0]] = float(fs[1])
            except (OSError, ValueError):
                pass
            try:
                rps = json.load(open(jpath))["rps"]
            except (OSError, ValueError, KeyError):
                rps = None

            def rate(w):
                a, b = marks.get(w + "_c0"), marks.get(w + "_c1")
                if not a or not b or a[2] is None or b[2] is None:
                    return None
                dt = (sum(b[:2]) - sum(a[:2])) / 2  # between the middles of the two reads
                return (b[2] - a[2]) / dt if dt > 0 else None

            def span(w):
                a, b = marks.get(w + "_begin"), marks.get(w + "_end")
                return b - a if (a and b and b > a) else None

            stat_rate, rec_rate = rate("stat"), rate("record")
            window, rec_window = span("stat"), span("record")
            if window is None:
                reqs, src = None, "–"
            elif stat_rate:
                reqs, src = stat_rate * window, "counter"
            elif rps:
                reqs, src = rps * window, "loadgen req/s"
            else:
                reqs, src = None, "–"
            rec = {"round": int(rnd), "load": load, "setup": setup, "window": window, "rps": rps,
                   "reqs": reqs, "src": src, "stat_ok": stat_ok,
                   "stat_rate": stat_rate, "rec_rate": rec_rate, "roles": roles, "per": {},
                   "rec_window": rec_window,
                   "overran": [w for w in ("stat", "record") if "loadgen_exit" in marks and w + "_end" in marks
                               and marks[w + "_end"] > marks["loadgen_exit"]]}
            total = defaultdict(float)
            for r, ev in per.items():
                if r == "other" and not ev:
                    continue
                rec["per"][r] = {k: (ev[k] / reqs if (reqs and stat_ok) else None) for k in ev}
                for k, x in ev.items():
                    total[k] += x
            rec["sys"] = total["raw_syscalls:sys_enter"] / reqs if (reqs and stat_ok) else None
            rec["task_us"] = total["task-clock"] * 1000 / reqs if (reqs and stat_ok) else None  # msec
            rec["insns"] = total["instructions"] / reqs if (reqs and total.get("instructions")) else None
            # by call, where the syscalls:sys_enter_* tracepoints were counted
            calls = {k.split("sys_enter_", 1)[1]: v for k, v in total.items() if k.startswith("syscalls:sys_enter_")}
            rec["calls"] = {k: v / reqs for k, v in calls.items()} if (reqs and stat_ok and calls) else {}
            if rec["calls"] and rec["sys"] is not None:
                rec["calls"]["other"] = max(0.0, rec["sys"] - sum(rec["calls"].values()))
            # the profiles: top self-time entries per process
            rec["profiles"] = {}
            for r in roles:
                prof = os.path.join(res, f"profile-{setup}-{load}-{r}.txt")
                if not os.path.exists(prof):
                    continue
                top, samples = [], None
                for l in open(prof, errors="replace"):
                    m = re.match(r"^# Samples: (\S+)", l)
                    if m:
                        samples = m.group(1)
                    m = re.match(r"^\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.+?)(?:\s+-\s+-)?\s*$", l)  # (IPC columns: "-  -")
                    if m:
                        top.append((float(m.group(1)), m.group(2), m.group(3), m.group(4)))
                kernel = None
                try:
                    for l in open(f"{pfx}.dso-{r}.txt", errors="replace"):
                        m = re.match(r"^\s+([\d.]+)%\s+\[kernel\.kallsyms\]", l)
                        if m:
                            kernel = float(m.group(1))
                    if kernel is None and top:
                        kernel = 0.0
                except OSError:
                    pass
                rec["profiles"][r] = {"file": os.path.basename(prof), "samples": samples, "top": top[:8], "kernel": kernel}
            out.append(rec)
    return out


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--parse-client":
        r = parse_client(sys.argv[2], sys.argv[3])
        print(f"{r['rps']:.0f} req/s, {r['ok']} ok, {r['errors']} errors" if r else "no result")
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--duration", default="")
    ap.add_argument("--bulk", type=int, default=0)
    ap.add_argument("--shards", default="")
    ap.add_argument("--elapsed", default="")
    ap.add_argument("--quick", default="0")
    ap.add_argument("--expected", default="")
    ap.add_argument("--skipped", default="")
    ap.add_argument("--perf", default="0")
    a = ap.parse_args()
    res = a.results

    rows = defaultdict(list)  # (load, setup) -> [record]
    with open(os.path.join(res, "results.tsv")) as f:
        next(f)
        for line in f:
            # user_ticks and sys_ticks: runs from before they were recorded have neither;
            # responder_shard_ticks ("T0,T1", rtun setups): empty or absent where not recorded
            rnd, load, setup, path, ticks, hwm, tck, *split = line.rstrip("\n").split("\t")
            try:
                j = json.load(open(path))
            except (OSError, ValueError):
                continue
            lat = j["latency_us"]["corrected"]
            ticks, tck, hwm = int(ticks), int(tck), int(hwm)
            has_pids = setup != "direct"
            cpu_us = ticks * 1e6 / tck if has_pids else None
            rec = {
                "round": int(rnd),
                "path": path,
                "rps": j["rps"],
                "ok": j["ok"],
                "errors": j["errors_total"],
                "p50": lat["p50"],
                "p99": lat["p99"],
                "p999": lat["p99.9"],
                "max": lat["max"],
                "cpu_per_req": (cpu_us / j["ok"]) if (cpu_us is not None and j["ok"]) else None,
                "user_per_req": (int(split[0]) * 1e6 / tck / j["ok"]) if (has_pids and len(split) >= 2 and j["ok"]) else None,
                "sys_per_req": (int(split[1]) * 1e6 / tck / j["ok"]) if (has_pids and len(split) >= 2 and j["ok"]) else None,
                "shards": shard_ticks(split[2] if len(split) >= 3 else ""),
                "cpu_s": (cpu_us / 1e6) if cpu_us is not None else None,
                "rss_mib": (hwm / 1024) if has_pids else None,
                "rate": j.get("rate"),
            }
            if load.startswith("e-"):
                nbytes = j["bytes_received"] if load == "e-down" else j["bytes_sent"]
                secs = lat["max"] / 1e6 if lat["max"] else None
                rec["bps"] = nbytes / secs if (secs and j["ok"]) else None
                rec["cpu_per_gib"] = (rec["cpu_s"] / (nbytes / (1 << 30))) if (rec["cpu_s"] is not None and nbytes) else None
            rows[(load, setup)].append(rec)

    def agg(load, setup):
        rs = rows.get((load, setup))
        if not rs:
            return None
        m = {k: med([r.get(k) for r in rs]) for k in
             ["rps", "p50", "p99", "p999", "cpu_per_req", "user_per_req", "sys_per_req", "rss_mib", "bps",
              "cpu_per_gib", "errors"]}
        m["n"] = len(rs)
        # the round closest to the median req/s (or bytes/s) stands for the plot
        key = "bps" if load.startswith("e-") else "rps"
        target = m[key]
        m["rep"] = min(rs, key=lambda r: abs((r.get(key) or 0) - (target or 0)))
        m["unreached"] = sum(1 for r in rs if r["rate"] and not r["rate"]["reached"])
        return m

    setups_seen = sorted({s for (_, s) in rows}, key=lambda s: (SETUP_ORDER.index(s) if s in SETUP_ORDER else 99, s))
    plots = os.path.join(res, "plots")
    os.makedirs(plots, exist_ok=True)

    out = []
    w = out.append
    w(f"# rtun benchmark{' (--quick)' if a.quick == '1' else ''}\n")
    notes = open(os.path.join(res, "notes.txt")).read().strip() if os.path.exists(os.path.join(res, "notes.txt")) else ""
    uname = os.uname()
    w(f"- host: {uname.nodename}, {os.cpu_count()} cores, kernel {uname.release}; shared machine, loopback only")
    w(f"- rtun shards: {a.shards} responder + {a.shards} initiator (two processes); service: `loadgen serve` ({a.shards} threads); client: `loadgen run`")
    w(f"- {a.rounds} round(s), setups interleaved within each load (A B C D, A B C D, …); each cell is the median over rounds; {a.duration} s measured per run")
    w(f"- latency is the client's (loadgen, coordinated-omission corrected for open loop); CPU is utime+stime of the proxy processes (rtun: responder + initiator; nginx: master + worker; rathole: server + client) over the run, divided by completed requests (in parentheses: user + kernel, utime and stime apart, where recorded); peak RSS is VmHWM summed over those processes, reset before each run (`/proc/PID/clear_refs` 5)")
    w(f"- bench wall time: {a.elapsed} s")
    if a.skipped.strip():
        w(f"- skipped setups: {a.skipped}")
    if notes:
        w("\nNotes from the run:\n")
        for n in notes.splitlines():
            w(f"- {n}")
    rates = open(os.path.join(res, "open-loop-rates.txt")).read().split() if os.path.exists(os.path.join(res, "open-loop-rates.txt")) else []
    w("")

    summary = []
    for load, title in LOADS:
        present = [s for s in setups_seen if (load, s) in rows]
        if not present:
            continue
        w(f"## {title}\n")
        if load == "c-h2" and rates:
            w(f"Target rate {rates[0]} req/s (50 % of direct (a), round 1).\n")
        if load == "c-h1" and len(rates) > 1:
            w(f"Target rate {rates[1]} req/s (50 % of direct (b), round 1).\n")
        if load == "c-h2-low" and len(rates) > 2:
            w(f"Target rate {rates[2]} req/s (50 % of the lowest (a) req/s among the setups, round 1): a rate every setup should sustain, so latency is compared below saturation.\n")
        if load == "c-h1-low" and len(rates) > 3:
            w(f"Target rate {rates[3]} req/s (50 % of the lowest (b) req/s among the setups, round 1).\n")
        if load.startswith("e-"):
            w(f"One request of {a.bulk / (1 << 20):,.0f} MiB over HTTP/1.1 at the client; throughput = bytes / request time.\n")
        base = agg(load, "direct") if load != "f" else agg(load, "rtun-1host")
        bulk = load.startswith("e-")
        if bulk:
            w("| setup | throughput | time | CPU s/GiB | peak RSS | × direct | runs |")
            w("|---|---:|---:|---:|---:|---:|---:|")
        else:
            basename = "1 host" if load == "f" else "direct"
            w(f"| setup | req/s | p50 | p99 | p99.9 | CPU µs/req | peak RSS | req/s × {basename} | p99 × {basename} | errors | runs |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s in present:
            m = agg(load, s)
            rss = f"{m['rss_mib']:.1f} MiB" if m["rss_mib"] is not None else "–"
            if bulk:
                t = fmt_us(m["rep"]["max"])
                w(f"| {s} | {fmt_bps(m['bps'])} | {t} | {fmt_num(m['cpu_per_gib'], 2)} | {rss} | "
                  f"{fmt_ratio(m['bps'], base and base['bps'])} | {m['n']} |")
            else:
                extra = f" ({m['unreached']} run(s) below the target rate)" if m["unreached"] else ""
                split = ""
                if m["user_per_req"] is not None and m["sys_per_req"] is not None:
                    split = f" ({m['user_per_req']:.1f} + {m['sys_per_req']:.1f})"
                w(f"| {s} | {fmt_num(m['rps'])}{extra} | {fmt_us(m['p50'])} | {fmt_us(m['p99'])} | {fmt_us(m['p999'])} | "
                  f"{fmt_num(m['cpu_per_req'], 1)}{split} | {rss} | {fmt_ratio(m['rps'], base and base['rps'])} | "
                  f"{fmt_ratio(m['p99'], base and base['p99'])} | {fmt_num(m['errors'])} | {m['n']} |")
        # rtun against each peer, and what TLS on the tunnel costs
        r = agg(load, "rtun")
        peer_lines = []
        t = agg(load, "rtun-tls")
        if r and t:
            peer_lines.append(f"rtun-tls / rtun (what mutual TLS on the tunnel adds): CPU/req {fmt_ratio(t['cpu_per_req'], r['cpu_per_req'])}, req/s {fmt_ratio(t['rps'], r['rps'])}, p99 {fmt_ratio(t['p99'], r['p99'])}")
        # the profile-guided build (bench/pgo.sh) against the plain one, then each against the peers
        g = agg(load, "rtun-pgo")
        if r and g:
            if bulk:
                peer_lines.append(f"rtun-pgo / rtun (the profile-guided build): throughput {fmt_ratio(g['bps'], r['bps'])}, CPU per GiB {fmt_ratio(g['cpu_per_gib'], r['cpu_per_gib'])}")
            else:
                peer_lines.append(f"rtun-pgo / rtun (the profile-guided build): CPU/req {fmt_ratio(g['cpu_per_req'], r['cpu_per_req'])}, req/s {fmt_ratio(g['rps'], r['rps'])}, p99 {fmt_ratio(g['p99'], r['p99'])}")
        for name, m in (("rtun", r), ("rtun-pgo", g)):
            if not m:
                continue
            for p in PEERS:
                pm = agg(load, p)
                if not pm:
                    continue
                if bulk:
                    peer_lines.append(f"{name} / {p}: throughput {fmt_ratio(m['bps'], pm['bps'])}, CPU per GiB {fmt_ratio(m['cpu_per_gib'], pm['cpu_per_gib'])}, peak RSS {fmt_ratio(m['rss_mib'], pm['rss_mib'])}")
                else:
                    split = ""
                    if m["user_per_req"] is not None and pm["user_per_req"] is not None:
                        split = (f" (user {fmt_ratio(m['user_per_req'], pm['user_per_req'])}, "
                                 f"kernel {fmt_ratio(m['sys_per_req'], pm['sys_per_req'])})")
                    peer_lines.append(f"{name} / {p}: req/s {fmt_ratio(m['rps'], pm['rps'])}, CPU/req {fmt_ratio(m['cpu_per_req'], pm['cpu_per_req'])}{split}, p99 {fmt_ratio(m['p99'], pm['p99'])}, peak RSS {fmt_ratio(m['rss_mib'], pm['rss_mib'])}")
        # load (a) is four h2 connections: how the responder's shards shared each round of an
        # rtun setup (a connection stays on the shard it was handed to)
        shard_lines = []
        if load == "a":
            for s in present:
                line = split_line(s, sorted(rows[(load, s)], key=lambda r: r["round"]))
                if s.startswith("rtun") and line:
                    shard_lines.append(line)
        peer_lines.extend(shard_lines)
        if peer_lines:
            w("")
            for l in peer_lines:
                w(f"- {l}")
        # plot from the representative round of each setup
        d = os.path.join(plots, load)
        os.makedirs(d, exist_ok=True)
        files = []
        for s in present:
            src = agg(load, s)["rep"]["path"][: -len(".json")] + ".hdr"
            if os.path.exists(src):
                dst = os.path.join(d, f"{s}.hdr")
                shutil.copyfile(src, dst)
                files.append(dst)
        if files and not bulk:
            svg = os.path.join(plots, f"{load}.svg")
            p = subprocess.run([a.loadgen, "compare", *files, "--plot", svg], capture_output=True, text=True)
            if p.returncode == 0:
                w(f"\n![{load} latency by percentile](plots/{load}.svg)\n")
                w("```")
                w("\n".join(l for l in p.stdout.splitlines() if not l.startswith("plot written")))
                w("```")
        w("")
        line = f"{load:7s} " + "  ".join(
            f"{s} {fmt_bps(agg(load, s)['bps']) if bulk else fmt_num(agg(load, s)['rps']) + ' req/s p99 ' + fmt_us(agg(load, s)['p99'])}"
            for s in present)
        summary.append(line)
        summary.extend(f"        {l}" for l in shard_lines)

    # scale (swarm.tsv; files from before the tls-rate load have only the first 8 columns)
    swarm = []
    sp = os.path.join(res, "swarm.tsv")
    if os.path.exists(sp):
        with open(sp) as f:
            next(f)
            swarm = [(l.rstrip("\n").split("\t") + ["-"] * 3)[:11] for l in f if l.strip()]
    if swarm:
        w("## Scale: simulated initiators (`loadgen swarm`) against one responder\n")
        w("Each node: one TCP connection from a 127.0.0.x source (round-robin over 127.0.0.2-20), rtun's handshake, then an h2 server answering 200 (`tls-rate-mtls`: inside a mutual-TLS session). RSS is the responder's VmRSS before the swarm and 1-3 s after every tunnel connected (idle, PINGs flowing).\n")
        w("| scenario | nodes | connected | failures | time to connect all | responder RSS before | after | RSS per idle tunnel |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for sc, n, c, fl, t, b, af, per, *_ in swarm:
            w(f"| {sc} | {n} | {c} | {fl} | {float(t):.2f} s | {int(b)/1024:.1f} MiB | {int(af)/1024:.1f} MiB | {int(per)/1024:.1f} KiB |")
        w("")

    # tls-rate: new tunnels per second, plaintext vs mutual TLS
    rate = {}
    def secs(x):
        return float(x) if x not in ("", "-") else None

    for sc, n, c, fl, t, b, af, per, cpu, swarm_cpu, kinds in swarm:
        if sc.startswith("tls-rate-"):
            n, c, t = int(n), int(c), float(t)
            cpu_s, swarm_s = secs(cpu), secs(swarm_cpu)
            rate[sc[len("tls-rate-"):]] = {
                "nodes": n, "connected": c, "failures": int(fl), "kinds": kinds, "t": t,
                "per_s": n / t if t > 0 else None, "cpu_s": cpu_s, "swarm_s": swarm_s,
                "cpu_ms": cpu_s * 1000 / c if (cpu_s is not None and c) else None,
                "swarm_ms": swarm_s * 1000 / c if (swarm_s is not None and c) else None,
            }
    if rate:
        w(f"## TLS handshake rate: new tunnels per second on {a.shards} shards\n")
        w("A fresh responder per variant, dialed once by `loadgen swarm` (every node one new tunnel: TCP connect, then for `mtls` a TLS 1.3 handshake with rtun's rustls/ring stack presenting a P-256 client certificate to a listener with `client_ca`, then rtun's handshake request and h2). new tunnels/s = nodes / time to connect all; CPU = utime+stime of the responder (and of the swarm) from the swarm's start until every tunnel was up. The swarm does the client half of every handshake on the same cores (and the machine is shared), so the rate is a floor of what the responder alone sustains; the responder's CPU per new tunnel is its own cost.\n")
        w("| variant | nodes | connected | failures | time to connect all | new tunnels/s | responder CPU | responder CPU per new tunnel | swarm CPU per new tunnel |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for v in sorted(rate, key=lambda v: (v != "plain", v)):
            m = rate[v]
            fails = f"{m['failures']}" + (f" ({m['kinds']})" if m["kinds"] not in ("", "-") else "")
            cpu = f"{m['cpu_s']:.2f} s" if m["cpu_s"] is not None else "–"
            ms = {k: f"{m[k]:.3f} ms" if m[k] is not None else "–" for k in ("cpu_ms", "swarm_ms")}
            w(f"| {v} | {m['nodes']} | {m['connected']} | {fails} | {m['t']:.2f} s | {fmt_num(m['per_s'])} | {cpu} | {ms['cpu_ms']} | {ms['swarm_ms']} |")
        p, t = rate.get("plain"), rate.get("mtls")
        if p and t:
            w("")
            w(f"- mtls / plain (what the mutual-TLS handshake costs): new tunnels/s {fmt_ratio(t['per_s'], p['per_s'])}, responder CPU per new tunnel {fmt_ratio(t['cpu_ms'], p['cpu_ms'])}, swarm CPU per new tunnel {fmt_ratio(t['swarm_ms'], p['swarm_ms'])}")
        w("")

    # --cross-check: loadgen against h2load (a) and wrk (b), same setup, backend and processes
    xc = defaultdict(list)  # (load, setup, backend, client) -> [record]
    xp = os.path.join(res, "xcheck.tsv")
    if os.path.exists(xp):
        with open(xp) as f:
            next(f)
            for line in f:
                # responder_shard_ticks, the tenth column (rtun setups), is absent in older runs
                rnd, load, setup, backend, client, path, pt, st, tck, *split = line.rstrip("\n").split("\t")
                r = parse_client(client, path)
                if not r or not r["ok"]:
                    continue
                r["shards"] = shard_ticks(split[0] if split else "")
                r["proxy_us"] = int(pt) * 1e6 / int(tck) / r["ok"] if setup != "direct" else None
                r["backend_us"] = int(st) * 1e6 / int(tck) / r["ok"]
                xc[(load, setup, backend, client)].append(r)
    xc_lines, xc_missing = [], []

    def xc_med(load, setup, client):
        """Medians over rounds of one cross-check row (backend: the bench's service), or None."""
        rs = xc.get((load, setup, "serve", client))
        return {k: med([x[k] for x in rs]) for k in ("rps", "proxy_us")} if rs else None
    if xc:
        TOOL = {"a": "h2load", "b": "wrk"}
        w("## Cross-check: loadgen against h2load and wrk\n")
        w("The direct and nginx setups (and rtun's, against the bench's service), each measured by `loadgen run` and by a standard tool with the same load, "
          "interleaved (loadgen, tool, loadgen, tool, …): (a) `h2load -t 1 -c 4 -m 32` (h2c) and (b) `wrk -t 1 -c 64` "
          "(HTTP/1.1 keep-alive), against two backends: the bench's service (`loadgen serve`, as in the tables above) and "
          "an nginx backend (1 worker, a fixed 64-byte response). CPU µs/req is utime+stime over the client's measured "
          "window (after the warm-up) ÷ successful requests, for the same processes: the nginx proxy (master + worker) "
          "for the nginx setup, responder + initiator for rtun, the backend for direct (the only process there); the backend's CPU is also shown for "
          "the proxies. *bench cell* is the median of the table above for the same setup (backend `loadgen serve`). "
          "**agree**: loadgen's req/s and CPU µs/req (the compared CPU column) within 15 % of the tool's. "
          "Medians over rounds.\n")
        w("| load | setup | backend | bench cell req/s | loadgen req/s | tool req/s | loadgen / tool | loadgen CPU µs/req | tool CPU µs/req | loadgen / tool | backend CPU µs/req (loadgen, tool) | agree |")
        w("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        seen = sorted({k[:3] for k in xc}, key=lambda k: (k[0], k[2] != "serve", k[1] != "direct"))
        for load, setup, backend in seen:
            tool = TOOL[load]
            lg, tl = xc.get((load, setup, backend, "loadgen")), xc.get((load, setup, backend, tool))
            for c, v in (("loadgen", lg), (tool, tl)):
                if not v:
                    xc_missing.append(f"cross-check {load} {setup}/{backend}: no {c} numbers")
            m = {}
            for c, v in (("l", lg), ("t", tl)):
                m[c] = {k: med([r[k] for r in v]) for k in ("rps", "proxy_us", "backend_us")} if v else {}
                m[c]["n"] = len(v or [])
            key = "proxy_us" if setup != "direct" else "backend_us"
            rr = (m["l"]["rps"] / m["t"]["rps"]) if (lg and tl and m["t"]["rps"]) else None
            cr = (m["l"][key] / m["t"][key]) if (lg and tl and m["t"][key]) else None
            agree = rr is not None and cr is not None and abs(rr - 1) <= 0.15 and abs(cr - 1) <= 0.15
            bench = agg(load, setup) if backend == "serve" else None
            bcell = fmt_num(bench["rps"]) if bench else "–"
            bcpu = f"{fmt_num(m['l'].get('backend_us'), 1)}, {fmt_num(m['t'].get('backend_us'), 1)}"
            cpu_lbl = "" if setup != "direct" else " (backend)"
            w(f"| ({load}) | {setup} | {'loadgen serve' if backend == 'serve' else 'nginx'} | {bcell} | "
              f"{fmt_num(m['l'].get('rps'))} | {fmt_num(m['t'].get('rps'))} ({tool}) | {f'{rr:.2f}×' if rr else '–'} | "
              f"{fmt_num(m['l'].get(key), 1)}{cpu_lbl} | {fmt_num(m['t'].get(key), 1)} | {f'{cr:.2f}×' if cr else '–'} | "
              f"{bcpu} | {'yes' if agree else '**no**'} |")
            xc_lines.append(
                f"xcheck ({load}) {setup:6s} backend {backend:5s}: loadgen {fmt_num(m['l'].get('rps'))} req/s "
                f"{fmt_num(m['l'].get(key), 1)} µs/req | {tool} {fmt_num(m['t'].get('rps'))} req/s "
                f"{fmt_num(m['t'].get(key), 1)} µs/req | {'agree' if agree else 'DISAGREE'} within 15 %"
                + (f" (bench cell {bcell} req/s)" if bench else ""))
        w("")
        # rtun against nginx as each client reads them: the same ratio as the tables above, but
        # also from h2load and wrk, so that no verdict rests on loadgen's reading alone
        by_tool = []
        for load in ("a", "b"):
            for setup in ("rtun", "rtun-pgo"):
                for c in ("loadgen", TOOL[load]):
                    rm, nm = xc_med(load, setup, c), xc_med(load, "nginx", c)
                    if not rm or not nm:
                        continue
                    by_tool.append(f"({load}) {setup} / nginx read by {c}: req/s {fmt_ratio(rm['rps'], nm['rps'])}, "
                                   f"CPU/req {fmt_ratio(rm['proxy_us'], nm['proxy_us'])} "
                                   f"({fmt_num(rm['proxy_us'], 1)} against {fmt_num(nm['proxy_us'], 1)} µs)")
        if by_tool:
            w("rtun against nginx, as each client reads them (backend: the bench's service; medians over rounds):\n")
            for l in by_tool:
                w(f"- {l}")
            w("")
            xc_lines.extend(by_tool)
        # how the responder's shards shared each cross-check run of load (a), as for the main
        # rounds: a verdict read by h2load is only comparable if its connections split alike
        xc_splits = []
        for setup in ("rtun", "rtun-pgo"):
            for c in ("loadgen", TOOL["a"]):
                line = split_line(f"(a) {setup} read by {c}", xc.get(("a", setup, "serve", c)) or [])
                if line:
                    xc_splits.append(line)
        if xc_splits:
            for l in xc_splits:
                w(f"- {l}")
            w("")
            xc_lines.extend(xc_splits)

    # --perf: syscalls per request and profiles
    perf = read_perf(res)
    perf_lines = []
    if perf or a.perf == "1":
        w("## Syscalls and profiles (--perf)\n")
        hw = ""
        hp = os.path.join(res, "perf", "hw-counters.txt")
        if os.path.exists(hp):
            hw = open(hp).read().strip()
    if perf:
        rounds_all = sorted({r["round"] for r in rows.get(("a", "rtun"), []) + rows.get(("b", "rtun"), [])})
        pr = perf[0]["round"]
        w(f"Measured with `perf` in round {pr} (the last) of loads (a) and (b), inside the measured window "
          f"(after loadgen's warm-up), in two windows one after the other: first "
          f"`perf stat --per-thread -e raw_syscalls:sys_enter,task-clock -p PIDS -- WINDOW` ({perf[0]['window'] or 0:.2f} s), then "
          f"`perf record -e cpu-clock -F 499 -g -p PID -- WINDOW`, one per process (profiles; {perf[0]['rec_window'] or 0:.2f} s, until shortly before the load ends; "
          "WINDOW is a shell that stamps the window's start and end and reads the request counter at both). PIDS are the setup's proxy "
          "processes (rtun: responder + initiator; nginx: master + worker; rathole: server + client); for "
          "direct, the service (`loadgen serve`) itself, for reference only. **syscalls/req** = syscall entries "
          "of all their threads in the stat window ÷ the requests of that window: from the setup's own counter "
          "read at the window's start and end (rtun: the responder's `rtun_requests_total{listener=\"egress\"}`; "
          "nginx: `stub_status`), as that counter's rate × window length; without a counter, loadgen's req/s over the "
          "whole run × window. io_uring operations are not syscalls: rtun's reads and writes count only through "
          "the `io_uring_enter` calls that submit and reap them. **CPU µs/req (/proc)** is the table cell above "
          "(median over rounds); **CPU µs/req (perf)** is perf's task-clock of the same threads in the stat "
          "window ÷ its requests. **window ÷ run req/s**: the counter's rate in the stat and record windows ÷ "
          "loadgen's req/s over the run (what perf costs while attached; ≈1.00 = no visible cost).\n")
        if hw and hw != "supported":
            w("Hardware counters (instructions, cycles) are **not supported** on this machine (`perf stat -e instructions` "
              "says `<not supported>`, as in most VMs): no instructions per request here. Count them with "
              "`bench/instructions.sh` (callgrind: instructions per request of responder and initiator, repeatable "
              "on a busy machine).\n")
        w("| load | setup | syscalls/req | per process | × nginx | CPU µs/req (/proc) | × nginx | CPU µs/req (perf, window) | "
          + ("instructions/req | " if hw == "supported" else "") + "requests in window (source) | window ÷ run req/s (stat, record) |")
        w("|---|---|---:|---|---:|---:|---:|---:|" + ("---:|" if hw == "supported" else "") + "---:|---|")
        by = {(r["load"], r["setup"]): r for r in perf}
        order = sorted(perf, key=lambda r: (r["load"], SETUP_ORDER.index(r["setup"]) if r["setup"] in SETUP_ORDER else 99))
        for r in order:
            cell = agg(r["load"], r["setup"])
            cpu = cell["cpu_per_req"] if cell else None
            if r["setup"] == "direct":
                cpu = None
            n = by.get((r["load"], "nginx"))
            ncell = agg(r["load"], "nginx")
            nx_sys = fmt_ratio(r["sys"], n and n["sys"]) if r["setup"] not in ("nginx", "direct") else "–"
            nx_cpu = fmt_ratio(cpu, ncell and ncell["cpu_per_req"]) if r["setup"] not in ("nginx", "direct") else "–"
            procs = ", ".join(f"{k} {fmt_num(v.get('raw_syscalls:sys_enter'), 2)}" for k, v in r["per"].items())
            wr = ", ".join(f"{x / r['rps']:.2f}" if (x and r["rps"]) else "–" for x in (r["stat_rate"], r["rec_rate"]))
            ins = f" {fmt_num(r['insns'])} |" if hw == "supported" else ""
            flag = "".join(f" (**{x} window ended after the load**)" for x in r["overran"])
            setup = r["setup"] + (" (service)" if r["setup"] == "direct" else "")
            w(f"| ({r['load']}) | {setup} | {fmt_num(r['sys'], 2)} | {procs} | {nx_sys} | {fmt_num(cpu, 1)} | {nx_cpu} | "
              f"{fmt_num(r['task_us'], 1)} |{ins} {fmt_num(r['reqs'])} ({r['src']}) | {wr}{flag} |")
            perf_lines.append(f"perf ({r['load']}) {r['setup']:7s}: {fmt_num(r['sys'], 2)} syscalls/req ({procs}), "
                              f"task-clock {fmt_num(r['task_us'], 1)} µs/req, {fmt_num(r['reqs'])} requests in {fmt_num(r['window'], 2)} s ({r['src']})")
        # by call
        names = []
        for r in order:
            for k, x in r["calls"].items():
                if k != "other" and x >= 0.005 and k not in names:
                    names.append(k)
        if names:
            w("")
            w("Syscalls per request by call (`syscalls:sys_enter_<call>` tracepoints in the same window; *other* = the rest of the total):\n")
            w("| load | setup | " + " | ".join(names) + " | other |")
            w("|---|---|" + "---:|" * (len(names) + 1))
            for r in order:
                if r["calls"]:
                    w(f"| ({r['load']}) | {r['setup']} | " + " | ".join(fmt_num(r["calls"].get(k), 2) for k in names)
                      + f" | {fmt_num(r['calls'].get('other'), 2)} |")
        # what perf cost: the perf'd round against the other rounds (same cells, no perf)
        if len(rounds_all) > 1:
            w("")
            try:
                att = f"{((perf[0]['window'] or 0) + (perf[0]['rec_window'] or 0)) / float(a.duration) * 100:.0f} %"
            except (ValueError, ZeroDivisionError):
                att = "most"
            w(f"Cost of perf: round {pr} (perf attached for {att} of each run's measured window) against the median of the other rounds (no perf):\n")
            w("| load | setup | req/s, perf round | req/s, other rounds | ratio | CPU µs/req (/proc), perf round | other rounds | ratio |")
            w("|---|---|---:|---:|---:|---:|---:|---:|")
            for r in order:
                rs = rows.get((r["load"], r["setup"]), [])
                mine = [x for x in rs if x["round"] == pr]
                rest = [x for x in rs if x["round"] != pr]
                if not mine or not rest:
                    continue
                a_rps, b_rps = mine[0]["rps"], med([x["rps"] for x in rest])
                a_cpu, b_cpu = mine[0]["cpu_per_req"], med([x["cpu_per_req"] for x in rest])
                w(f"| ({r['load']}) | {r['setup']} | {fmt_num(a_rps)} | {fmt_num(b_rps)} | {fmt_ratio(a_rps, b_rps)} | "
                  f"{fmt_num(a_cpu, 1)} | {fmt_num(b_cpu, 1)} | {fmt_ratio(a_cpu, b_cpu)} |")
        w("")
        for load in ("a", "b"):
            r = by.get((load, "rtun"))
            if r and r["sys"] is not None:
                t = SYSCALL_TARGETS[load]
                w(f"- ({load}) rtun syscalls per request (responder + initiator) ≤ {t}: "
                  f"{'**met**' if r['sys'] <= t else '**missed**'}, {r['sys']:.2f}")
        w("")
        w("Profiles: `perf report --stdio --no-children --sort dso,symbol --percent-limit 1` of each process's own "
          "recording (`profile-<setup>-<load>-<process>.txt`, with call chains; one recording per process because "
          "`perf report --pid` on a shared one misattributes code the processes share). "
          "Self time; Rust code is built without frame pointers, so user-space call chains from `-g` are partial "
          "(kernel chains are complete). Top 8 per process:\n")
        for r in order:
            profs = [(k, v) for k, v in r["profiles"].items()]
            if not profs:
                continue
            w(f"**({r['load']}) {r['setup']}**\n")
            def head(k, v):
                kern = f", {v['kernel']:.0f} % in the kernel" if v["kernel"] is not None else ""
                return f"{k} ({v['samples'] or 0} samples{kern})"

            w("| # | " + " | ".join(head(k, v) for k, v in profs) + " |")
            w("|---:|" + "---|" * len(profs))
            depth = max((len(v["top"]) for _, v in profs), default=0)
            if depth == 0:
                w("| – | " + " | ".join("no samples (idle)" for _ in profs) + " |")
            for i in range(depth):
                cells = []
                for _, v in profs:
                    if i < len(v["top"]):
                        pct, dso, kind, sym = v["top"][i]
                        sym = sym if len(sym) <= 70 else sym[:67] + "…"
                        sym = sym.replace("|", "\\|").replace("`", "'")
                        cells.append(f"{pct:.1f} % `{sym}` ({dso})")
                    else:
                        cells.append("" if (i or v["top"]) else "no samples (idle)")
                w(f"| {i + 1} | " + " | ".join(cells) + " |")
            w("")
    elif a.perf == "1":
        w("`--perf` was given but nothing was measured (perf missing or refused: see the notes above).\n")

    # targets
    w("## Targets\n")
    verdicts = []

    def v(name, ok, detail, doubt=False):
        verdicts.append((name, ok, detail, doubt))

    # The targets against nginx, for the plain build and (when measured) the profile-guided one.
    builds = [b for b in ("rtun", "rtun-pgo") if b in setups_seen]
    for load in ["a", "b"]:
        for b in builds:
            r, n = agg(load, b), agg(load, "nginx")
            if r and n:
                ok = r["rps"] >= n["rps"] and (r["cpu_per_req"] or 1e9) <= (n["cpu_per_req"] or 0)
                detail = (f"req/s {fmt_num(r['rps'])} vs {fmt_num(n['rps'])} ({fmt_ratio(r['rps'], n['rps'])}); CPU/req "
                          f"{fmt_num(r['cpu_per_req'], 1)} vs {fmt_num(n['cpu_per_req'], 1)} µs ({fmt_ratio(r['cpu_per_req'], n['cpu_per_req'])})")
                # A verdict is only as good as its baseline: when the same run's cross-check
                # (loadgen against the same nginx, interleaved with the tool) reads nginx more
                # than 15 % away from the table's cell, say so, and give the ratio against it.
                # The ratio then given is the cross-check's own (loadgen against both, same rounds).
                x, xb = xc_med(load, "nginx", "loadgen"), xc_med(load, b, "loadgen")
                doubt = False
                if x and x["rps"] and x["proxy_us"] and n["rps"] and n["cpu_per_req"]:
                    dr, dc = n["rps"] / x["rps"], n["cpu_per_req"] / x["proxy_us"]
                    if not (0.85 <= dr <= 1.15 and 0.85 <= dc <= 1.15):
                        doubt = True
                        detail += (f"; this nginx cell is {dr:.2f}× the req/s and {dc:.2f}× the CPU/req of the cross-check's "
                                   f"loadgen runs of the same nginx ({fmt_num(x['rps'])} req/s, {fmt_num(x['proxy_us'], 1)} µs)")
                        if xb and xb["rps"] and xb["proxy_us"]:
                            detail += (f", where {b} read {fmt_ratio(xb['rps'], x['rps'])} the req/s and "
                                       f"{fmt_ratio(xb['proxy_us'], x['proxy_us'])} the CPU/req")
                v(f"({load}) {b} ≥ nginx req/s and ≤ nginx CPU/req", ok, detail, doubt)
    # The same targets as a standard tool reads them (--cross-check): a verdict that holds
    # under loadgen alone is not a verdict.
    for load, tool in (("a", "h2load"), ("b", "wrk")):
        for b in ("rtun", "rtun-pgo"):
            rm, nm = xc_med(load, b, tool), xc_med(load, "nginx", tool)
            if rm and nm:
                ok = rm["rps"] >= nm["rps"] and (rm["proxy_us"] or 1e9) <= (nm["proxy_us"] or 0)
                v(f"({load}) {b} ≥ nginx req/s and ≤ nginx CPU/req, read by {tool}", ok,
                  f"req/s {fmt_num(rm['rps'])} vs {fmt_num(nm['rps'])} ({fmt_ratio(rm['rps'], nm['rps'])}); CPU/req "
                  f"{fmt_num(rm['proxy_us'], 1)} vs {fmt_num(nm['proxy_us'], 1)} µs ({fmt_ratio(rm['proxy_us'], nm['proxy_us'])})")
    for load in ["a", "b"]:
        r, t = agg(load, "rtun"), agg(load, "rtun-tls")
        if r and t and r["cpu_per_req"] and t["cpu_per_req"]:
            v(f"({load}) TLS on the tunnel adds ≤ 15 % CPU per request", t["cpu_per_req"] <= 1.15 * r["cpu_per_req"],
              f"{fmt_num(t['cpu_per_req'], 1)} vs {fmt_num(r['cpu_per_req'], 1)} µs ({fmt_ratio(t['cpu_per_req'], r['cpu_per_req'])})")
    for load in ["c-h2", "c-h1", "c-h2-low", "c-h1-low"]:
        for b in builds:
            r, n = agg(load, b), agg(load, "nginx")
            if r and n:
                v(f"({load}) {b} p99 ≤ nginx p99 at the same rate", r["p99"] <= n["p99"],
                  f"{fmt_us(r['p99'])} vs {fmt_us(n['p99'])}")
    r, h = agg("d", "rtun"), agg("d", "rathole")
    if r and h:
        v("(d) rtun ≥ 2.5× rathole req/s (churn)", r["rps"] >= 2.5 * h["rps"],
          f"{fmt_num(r['rps'])} vs {fmt_num(h['rps'])} ({fmt_ratio(r['rps'], h['rps'])})")
    for load in ["e-down", "e-up"]:
        r, h = agg(load, "rtun"), agg(load, "rathole")
        if r and h and r["bps"] and h["bps"]:
            ok = r["bps"] >= 0.8 * h["bps"] and (r["rss_mib"] or 0) < 64
            v(f"({load}) rtun ≥ 0.8× rathole bytes/s with rtun RSS < 64 MiB", ok,
              f"{fmt_bps(r['bps'])} vs {fmt_bps(h['bps'])} ({fmt_ratio(r['bps'], h['bps'])}); rtun peak RSS {r['rss_mib']:.1f} MiB")
    one = agg("f", "rtun-1host")
    many = [s for s in setups_seen if s.startswith("rtun-") and s.endswith("hosts")]
    if one and many:
        m = agg("f", many[0])
        v(f"(f) p99 with {many[0][5:]} within 1.1× of one host", m["p99"] <= 1.1 * one["p99"],
          f"{fmt_us(m['p99'])} vs {fmt_us(one['p99'])} ({fmt_ratio(m['p99'], one['p99'])}); req/s {fmt_num(m['rps'])} vs {fmt_num(one['rps'])}")
    for sc, n, c, fl, t, b, af, per, *_ in swarm:
        if sc == "scale":
            v("(scale) ≤ 16 KiB responder RSS per idle tunnel", int(per) <= 16 * 1024,
              f"{int(per)/1024:.1f} KiB per tunnel over {c} tunnels; {c}/{n} connected in {float(t):.2f} s, {fl} failures")
    for p in perf:
        if p["setup"] in ("rtun", "rtun-pgo") and p["load"] in SYSCALL_TARGETS and p["sys"] is not None:
            t = SYSCALL_TARGETS[p["load"]]
            n = next((q for q in perf if q["load"] == p["load"] and q["setup"] == "nginx"), None)
            vs = f"; nginx {n['sys']:.2f} ({fmt_ratio(p['sys'], n['sys'])})" if (n and n["sys"]) else ""
            per = ", ".join(f"{k} {fmt_num(x.get('raw_syscalls:sys_enter'), 2)}" for k, x in p["per"].items())
            v(f"({p['load']}) {p['setup']} syscalls per request (responder + initiator) ≤ {t}", p["sys"] <= t,
              f"{p['sys']:.2f} ({per}){vs}; perf stat, one {fmt_num(p['window'], 2)} s window")
    w("| target | met | measured |")
    w("|---|---|---|")
    for name, ok, detail, doubt in verdicts:
        met = "yes" if ok else "**no**"
        w(f"| {name} | {met + ', on a disputed baseline' if doubt else met} | {detail} |")
    w("")

    with open(os.path.join(res, "report.md"), "w") as f:
        f.write("\n".join(out) + "\n")

    # stdout summary and exit status
    print(f"bench: report {os.path.join(res, 'report.md')}")
    for l in summary:
        print("  " + l)
    for sc, n, c, fl, t, b, af, per, _, _, kinds in swarm:
        rate_s = f" ({int(n) / float(t):,.0f} new tunnels/s)" if float(t) > 0 else ""
        kinds = f" ({kinds})" if kinds not in ("", "-") else ""
        print(f"  {sc:7s} {c}/{n} tunnels in {float(t):.2f} s{rate_s}, {fl} failures{kinds}, {int(per)/1024:.1f} KiB RSS per tunnel")
    for name, ok, detail, doubt in verdicts:
        print(f"  target {'MET ' if ok else 'MISSED'}{' (disputed baseline)' if doubt else ''} {name}: {detail}")
    for l in xc_lines:
        print("  " + l)
    for l in perf_lines:
        print("  " + l)
    missing = list(xc_missing)
    loads_run = sorted({l for (l, _) in rows} | set())
    for s in a.expected.split():
        if s.startswith("rtun-") and s != "rtun":
            if not any(k[1] == s for k in rows):
                missing.append(f"{s}: no numbers")
            continue
        # Load (f) files rtun's rows as rtun-1host / rtun-1000hosts; the scale step has no rows.
        if not any(k[1] == s or k[1].startswith(s + "-") for k in rows) and not (s == "rtun" and swarm):
            if not rows and any(k[1] == s for k in xc):
                continue  # a cross-check-only run (--loads "" --cross-check)
            missing.append(f"{s}: no numbers at all")
            continue
        for l in loads_run:
            if l == "f":
                continue
            if (l, s) not in rows:
                missing.append(f"{s}: no numbers for load {l}")
    if missing:
        for m in missing:
            print(f"bench: FAILED {m}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
