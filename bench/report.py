#!/usr/bin/env python3
"""Turns one run of bench/run.sh into bench/RESULTS.md and bench/results.png.

usage: report.py WORK_DIR RESULTS_MD RESULTS_PNG
WORK_DIR holds results.tsv (one row per measurement), meta.tsv (machine, versions, memory)
and checks.tsv (did each setup answer each script correctly), as run.sh writes them.
Every figure is the median over the rounds of one run; ratios compare medians of the same run.
"""

import csv
import os
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict

SETUPS = ["ceiling", "jg-direct", "jg-proxy", "jg-fcgi", "nginx-fcgiwrap", "lighttpd"]
LABELS = {
    "ceiling": "spawn ceiling (posix_spawn, no HTTP)",
    "jg-direct": "Jailgate direct",
    "jg-proxy": "nginx proxy_pass → Jailgate",
    "jg-fcgi": "nginx fastcgi_pass → Jailgate FastCGI",
    "nginx-fcgiwrap": "nginx + fcgiwrap (16 preforked)",
    "lighttpd": "lighttpd mod_cgi",
}
SCRIPTS = {
    "hello.sh": "hello.sh (`#!/bin/sh`: dash)",
    "hello-busybox.sh": "hello-busybox.sh (`#!/bin/busybox sh`, static busybox)",
    "hello-static": "hello-static (a static C program, one write)",
    "out1m.sh": "out1m.sh (1 MiB of output: `head -c 1048576 /dev/zero`)",
}
ECHO_BYTES = 64 * 1024 * 1024
MB = 1_000_000

# The targets (issue 14).
DIRECT_VS_CEILING = 0.90
DIRECT_VS_CEILING_EXPLAIN = 0.85
PROXY_VS_FCGIWRAP = 1.2
C1_P50_OVER_CEILING_MS = 0.15
ECHO_DIRECT_VS_CEILING = 0.9
ECHO_PROXY_VS_CEILING = 0.5
IDLE_GATEWAY_BYTES = 15 * MB
WORKER_BYTES = 3 * MB
# The front's memory per waiting or running request, as the README states it: the 1,000-slow
# case's front RSS must stay within its start plus this much per CGI running at the peak.
FRONT_BYTES_PER_REQUEST = 64 * 1024


def median(values):
    return statistics.median(values) if values else None


class Cell:
    """The runs of one (script, concurrency, setup)."""

    def __init__(self, rows, cores):
        self.rows = rows
        self.runs = len(rows)
        self.rps = median([r["good"] / r["seconds"] if r["seconds"] > 0 else 0.0 for r in rows])
        ok = [r for r in rows if r["good"] > 0]
        self.p50 = median([r["p50_ms"] for r in ok])
        self.p99 = median([r["p99_ms"] for r in ok])
        self.errors = sum(r["non2xx"] + r["socket_errors"] for r in rows)
        self.total = sum(r["good"] + r["non2xx"] for r in rows)
        self.cpu = median([r["setup_cpu_us"] / r["good"] for r in ok])
        # The share of the machine that neither the setup nor the load generator used during the
        # run: other work on a shared machine, which the setups compete with for the cores.
        self.others = median([
            max(0.0, r["machine_cpu_us"] - r["setup_cpu_us"] - r["client_cpu_us"]) / (cores * r["seconds"] * 1e6)
            for r in rows if r["seconds"] > 0
        ])
        self.notes = [r["note"] for r in rows]


def load(work):
    rows = []
    with open(os.path.join(work, "results.tsv")) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            for key in ("conc", "round", "good", "non2xx", "socket_errors"):
                r[key] = int(r[key])
            for key in ("seconds", "p50_ms", "p99_ms", "setup_cpu_us", "client_cpu_us", "machine_cpu_us"):
                r[key] = float(r[key])
            rows.append(r)
    meta = {}
    with open(os.path.join(work, "meta.tsv")) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            meta[key] = value
    checks = []
    path = os.path.join(work, "checks.tsv")
    if os.path.exists(path):
        with open(path) as f:
            checks = [line.rstrip("\n").split("\t", 2) for line in f if line.strip()]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["script"], r["conc"], r["setup"])].append(r)
    cores = int(meta.get("cores", "1") or 1)
    cells = {key: Cell(value, cores) for key, value in groups.items()}
    return cells, meta, checks


def fmt_int(x):
    return "–" if x is None else f"{x:,.0f}"


def fmt_ms(x):
    if x is None:
        return "–"
    return f"{x:.2f}" if x < 100 else f"{x:,.0f}"


def fmt_pct(x):
    return "–" if x is None else f"{100 * x:.0f} %"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def mb(kb):
    return int(kb) * 1024 / MB


def verdict(ok):
    return "**pass**" if ok else "**miss**"


def throughput_table(cells, script, out):
    concs = sorted({c for (s, c, _) in cells if s == script})
    out.append(f"### {SCRIPTS[script]}\n")
    out.append("| setup | c | req/s | p50 ms | p99 ms | errors | CPU µs/req | × ceiling | × lighttpd | × nginx+fcgiwrap | × ceiling by CPU | other load |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for conc in concs:
        ceiling = cells.get((script, conc, "ceiling"))
        lighttpd = cells.get((script, conc, "lighttpd"))
        fcgiwrap = cells.get((script, conc, "nginx-fcgiwrap"))
        for setup in SETUPS:
            cell = cells.get((script, conc, setup))
            if cell is None:
                continue
            errors = f"{cell.errors:,}" if cell.errors == 0 else f"{cell.errors:,} of {cell.total:,}"
            out.append(
                f"| {LABELS[setup]} | {conc} | {fmt_int(cell.rps)} | {fmt_ms(cell.p50)} | {fmt_ms(cell.p99)} "
                f"| {errors} | {fmt_int(cell.cpu)} "
                f"| {fmt_ratio(cell.rps, ceiling and ceiling.rps)} "
                f"| {fmt_ratio(cell.rps, lighttpd and lighttpd.rps)} "
                f"| {fmt_ratio(cell.rps, fcgiwrap and fcgiwrap.rps)} "
                f"| {fmt_ratio(ceiling and ceiling.cpu, cell.cpu)} | {fmt_pct(cell.others)} |"
            )
    out.append("")


def echo_ok(note):
    return note == "echo ok" or note.startswith("echo ok ")


def echo_verdict(cell):
    bad = [n for n in cell.notes if not echo_ok(n)]
    if not bad:
        return f"correct ({cell.runs}/{cell.runs})"
    return "; ".join(sorted(set(n.removeprefix("echo ") for n in bad)))


def echo_table(cells, out):
    out.append("### echo.sh: 64 MiB POST echoed back (`cat`), one request at a time\n")
    out.append("Correctness: a curl upload per setup and round, its answer compared byte for byte "
               "(`cmp`) with what was sent; throughput: wrk, one connection, POSTing the same 64 MiB "
               "for the run's duration. MB/s counts the request body once (10⁶ bytes). Front RSS: "
               "Jailgate's front at the start of the wrk run → the most seen, sampled every 0.2 s (the run "
               "where it peaked highest).\n")
    out.append("| setup | echo | requests/s | MB/s | p50 ms | p99 ms | CPU ms/req | × ceiling | front RSS |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    ceiling = cells.get(("echo.sh", 1, "ceiling"))
    for setup in SETUPS:
        cell = cells.get(("echo.sh", 1, setup))
        if cell is None:
            continue
        rate = cell.rps * ECHO_BYTES / MB if cell.rps else 0
        cpu = "–" if cell.cpu is None else f"{cell.cpu / 1000:,.1f}"
        peak = front_growth([parse_note(n)[0] for n in cell.notes])
        out.append(
            f"| {LABELS[setup]} | {echo_verdict(cell)} | {cell.rps:.1f} | {rate:,.0f} | {fmt_ms(cell.p50)} "
            f"| {fmt_ms(cell.p99)} | {cpu} | {fmt_ratio(cell.rps or None, ceiling and ceiling.rps)} | {peak} |"
        )
    out.append("")


def front_growth(fields_of_runs):
    """ "start → peak MB" of the front's RSS in the run where it peaked highest."""
    runs = [(int(f["front_peak_kb"]), int(f.get("front_start_kb", 0))) for f in fields_of_runs if "front_peak_kb" in f]
    if not runs:
        return "–"
    peak, start = max(runs)
    return f"{mb(start):.1f} → {mb(peak):.1f} MB"


def parse_note(note):
    fields = {}
    for part in note.partition(" | gw: ")[0].split():
        key, _, value = part.partition("=")
        fields[key] = value
    statuses = {}
    for part in fields.get("statuses", "").split(","):
        status, _, n = part.partition("=")
        if n.isdigit():
            statuses[status] = int(n)
    return fields, statuses


def sleep_table(cells, meta, out):
    keys = sorted(k for k in cells if k[0] == "sleep1.sh")
    if not keys:
        return
    conc = keys[0][1]
    seconds = meta.get("sleep_seconds", "?")
    out.append(f"### sleep1.sh (`sleep 1`) at {conc:,} concurrent connections, {seconds} s\n")
    workers = int(meta.get("workers", "2") or 2)
    out.append(f"wrk with {conc:,} connections (timeout {seconds} s); medians over the rounds. A request "
               "still waiting when the time is up is neither completed nor an error. Jailgate runs "
               f"with its defaults: at most {512 * workers:,} CGIs at once (`--max-cgis-per-worker 512` × {workers} workers) and as many "
               "requests again waiting up to 5 s for a slot (then 503); a request beyond those gets 503 at once, so "
               "wrk's connections cycle through many quick 503s. Front RSS: at the start of the run → the "
               "most seen (VmRSS sampled every 0.2 s; the run where it peaked highest); worker peak: the "
               "largest of the worker processes. *Running / queued after*: the gateway's own "
               "`jailgate_running_cgis` and `jailgate_queued_requests` from its /metrics once the setup "
               "has no CGI left (one pair per round, in order): both should be back at 0.\n")
    out.append("| setup | completed (200) | completed/s | 503 | other answers | socket errors | front RSS | worker peak RSS | CGIs at once (peak) | running / queued after |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for setup in SETUPS:
        cell = cells.get(("sleep1.sh", conc, setup))
        if cell is None:
            continue
        ok, s503, sock, front, worker, cgis, after = [], [], [], [], [], [], []
        others = defaultdict(list)
        for row in cell.rows:
            fields, statuses = parse_note(row["note"])
            ok.append(statuses.get("200", row["good"]))
            s503.append(statuses.get("503", 0))
            sock.append(row["socket_errors"])
            for status, n in statuses.items():
                if status not in ("200", "503"):
                    others[status].append(n)
            front.append(fields)
            if "after_running" in fields:
                after.append(f"{fields['after_running']} / {fields.get('after_queued', '?')}")
            if "front_peak_kb" in fields:
                worker.append(int(fields["worker_peak_kb"]))
                cgis.append(int(fields["cgis_peak"]))
        secs = median([r["seconds"] for r in cell.rows]) or float(seconds)
        other_s = ", ".join(f"{fmt_int(median(v + [0] * (cell.runs - len(v))))} × {k}" for k, v in sorted(others.items())) or "0"
        front_s = front_growth(front)
        worker_s = f"{mb(max(worker)):.1f} MB" if worker else "–"
        cgis_s = f"{max(cgis):,}" if cgis else "–"
        out.append(
            f"| {LABELS[setup]} | {fmt_int(median(ok))} | {fmt_int(median(ok) / secs)} | {fmt_int(median(s503))} "
            f"| {other_s} | {fmt_int(median(sock))} | {front_s} | {worker_s} | {cgis_s} | {', '.join(after) or '–'} |"
        )
    out.append("")


def memory_section(meta, out):
    def kb(key):
        return int(meta.get(key, "0") or 0)

    out.append("### Jailgate's memory\n")
    out.append("The gateway is a root **supervisor** (starts and stops workers), the **front** (HTTP and "
               f"FastCGI, runs as uid 1879048190) and `--workers {meta.get('workers', '?')}` **workers**; each worker is two "
               "`jailgate-worker` processes: the one the supervisor started and its child, PID 1 of "
               "the jail's PID namespace, which spawns the CGIs. VmRSS per process; PSS (shared pages "
               "split between the processes sharing them) in brackets. *Idle* is after the start-up "
               "checks (a few requests of each script), *after* is at the end of the run.\n")
    out.append("| process | idle | after the run |")
    out.append("|---|---:|---:|")

    def line(name, suffix):
        cells = []
        for prefix in ("idle_start", "idle_end"):
            rss = meta.get(f"{prefix}_{suffix}_rss_kb")
            pss = meta.get(f"{prefix}_{suffix}_pss_kb")
            cells.append("–" if rss is None else f"{mb(rss):.1f} MB ({mb(pss):.1f})")
        out.append(f"| {name} | {cells[0]} | {cells[1]} |")

    line("supervisor (root)", "supervisor")
    line("front (uid 1879048190)", "front")
    i = 0
    while f"idle_start_worker{i}_outer_rss_kb" in meta:
        line(f"worker {i + 1}: outer process", f"worker{i}_outer")
        line(f"worker {i + 1}: PID 1 in the jail", f"worker{i}_inner")
        i += 1
    hwm = kb("idle_end_front_hwm_kb")
    out.append(f"\nThe front's high-water mark over the whole run (VmHWM): {mb(hwm):.1f} MB.")
    if meta.get("end_counts"):
        out.append(f"At the end of the run, idle, the gateway's /metrics said: {meta['end_counts']} "
                   "(`jailgate_running_cgis`, `jailgate_queued_requests`).")
    out.append("")


def targets(cells, meta, out):
    def rps(script, conc, setup):
        cell = cells.get((script, conc, setup))
        return cell.rps if cell else None

    def by_cpu(script, conc, setup, reference):
        mine, ref = cells.get((script, conc, setup)), cells.get((script, conc, reference))
        if mine and ref and mine.cpu and ref.cpu:
            return f"; by CPU per request {ref.cpu / mine.cpu:.2f}"
        return ""

    def line(ok, text):
        out.append(f"- {verdict(ok) if ok is not None else '**n/a**'}: {text}")

    out.append("## Targets (issue 14)\n")
    direct, ceiling = rps("hello.sh", 16, "jg-direct"), rps("hello.sh", 16, "ceiling")
    if direct and ceiling:
        ratio = direct / ceiling
        extra = "" if ratio >= DIRECT_VS_CEILING_EXPLAIN else f" (below {DIRECT_VS_CEILING_EXPLAIN}: to be explained with a profile)"
        line(ratio >= DIRECT_VS_CEILING, f"hello.sh direct at c=16 is {ratio:.2f} × the spawn ceiling "
             f"({direct:,.0f} vs {ceiling:,.0f} req/s{by_cpu('hello.sh', 16, 'jg-direct', 'ceiling')}; "
             f"target ≥ {DIRECT_VS_CEILING}){extra}")
    else:
        line(None, "hello.sh direct at c=16 vs the spawn ceiling: not measured")
    proxy, fcgiwrap = rps("hello.sh", 16, "jg-proxy"), rps("hello.sh", 16, "nginx-fcgiwrap")
    if proxy and fcgiwrap:
        line(proxy >= PROXY_VS_FCGIWRAP * fcgiwrap, f"hello.sh behind nginx proxy_pass at c=16 is {proxy / fcgiwrap:.2f} × "
             f"nginx + fcgiwrap ({proxy:,.0f} vs {fcgiwrap:,.0f} req/s{by_cpu('hello.sh', 16, 'jg-proxy', 'nginx-fcgiwrap')}; "
             f"target ≥ {PROXY_VS_FCGIWRAP})")
    one, one_ceiling = cells.get(("hello.sh", 1, "jg-direct")), cells.get(("hello.sh", 1, "ceiling"))
    if one and one_ceiling and one.p50 is not None and one_ceiling.p50 is not None:
        over = one.p50 - one_ceiling.p50
        line(over <= C1_P50_OVER_CEILING_MS, f"hello.sh direct at c=1: p50 {one.p50:.2f} ms, the ceiling's "
             f"{one_ceiling.p50:.2f} ms + {over:.2f} ms (target ≤ + {C1_P50_OVER_CEILING_MS} ms)")
    for script in ("hello.sh", "hello-busybox.sh", "hello-static"):
        mine = cells.get((script, 64, "jg-direct"))
        anchors = [cells.get((script, 64, s)) for s in ("lighttpd", "nginx-fcgiwrap")]
        anchors = [a for a in anchors if a and a.p99 is not None]
        if mine and mine.p99 is not None and anchors:
            best = min(anchors, key=lambda a: a.p99)
            name = LABELS[best.rows[0]["setup"]]
            line(mine.p99 <= best.p99, f"{script} p99 at c=64, direct: {mine.p99:.2f} ms vs the best anchor's "
                 f"{best.p99:.2f} ms ({name})")
    echo_ceiling = cells.get(("echo.sh", 1, "ceiling"))
    for setup, share in (("jg-direct", ECHO_DIRECT_VS_CEILING), ("jg-proxy", ECHO_PROXY_VS_CEILING)):
        echo = cells.get(("echo.sh", 1, setup))
        if echo and echo_ceiling and echo_ceiling.rps:
            correct = all(echo_ok(n) for n in echo.notes)
            ratio = echo.rps / echo_ceiling.rps
            line(correct and ratio >= share, f"64 MiB POST echo, {LABELS[setup]}: {echo_verdict(echo)}, "
                 f"{echo.rps * ECHO_BYTES / 1e6:,.0f} MB/s, {ratio:.2f} × the ceiling's "
                 f"{echo_ceiling.rps * ECHO_BYTES / 1e6:,.0f} MB/s (target ≥ {share})")
    sleepers = sorted(k for k in cells if k[0] == "sleep1.sh")
    if sleepers:
        conc = sleepers[0][1]
        mine, lighttpd = cells.get(("sleep1.sh", conc, "jg-direct")), cells.get(("sleep1.sh", conc, "lighttpd"))
        if mine and lighttpd:
            done = lambda cell: median([parse_note(r["note"])[1].get("200", r["good"]) / r["seconds"]
                                        for r in cell.rows if r["seconds"] > 0])
            fields = [parse_note(r["note"])[0] for r in mine.rows]
            fields = [f for f in fields if "front_peak_kb" in f]
            if fields:
                peak = max(fields, key=lambda f: int(f["front_peak_kb"]))
                top, cgis = int(peak["front_peak_kb"]), int(peak.get("cgis_peak", 0))
                # From the idle front, not the run's start: glibc keeps what earlier rounds
                # freed, which would hide the growth.
                idle = int(meta.get("idle_start_front_rss_kb") or peak.get("front_start_kb", 0))
                bound_kb = idle + cgis * FRONT_BYTES_PER_REQUEST / 1024
                per_request = (top - idle) * 1024 / cgis if cgis else 0
                memory = (f"; front RSS {mb(idle):.1f} MB idle → {mb(top):.1f} MB with {cgis:,} CGIs at once, "
                          f"{per_request / 1024:.0f} KiB per request (bound {FRONT_BYTES_PER_REQUEST // 1024} KiB: "
                          f"≤ {mb(bound_kb):.1f} MB)")
                within = top <= bound_kb
            else:
                memory, within = "; front RSS not measured", False
            ours, theirs = done(mine), done(lighttpd)
            line(ours >= theirs and within, f"`sleep 1` at {conc:,} connections, direct: {ours:,.0f} completed/s "
                 f"vs lighttpd's {theirs:,.0f}{memory}")
    front, supervisor = meta.get("idle_start_front_rss_kb"), meta.get("idle_start_supervisor_rss_kb")
    if front and supervisor:
        worst = max(mb(front), mb(supervisor))
        line(worst * MB <= IDLE_GATEWAY_BYTES, f"idle gateway RSS: front {mb(front):.1f} MB, supervisor "
             f"{mb(supervisor):.1f} MB (target ≤ {IDLE_GATEWAY_BYTES / MB:.0f} MB each)")
    workers = []
    i = 0
    while f"idle_start_worker{i}_outer_rss_kb" in meta:
        outer = mb(meta[f"idle_start_worker{i}_outer_rss_kb"])
        inner = mb(meta.get(f"idle_start_worker{i}_inner_rss_kb", "0"))
        pss = mb(meta.get(f"idle_start_worker{i}_outer_pss_kb", "0")) + mb(meta.get(f"idle_start_worker{i}_inner_pss_kb", "0"))
        workers.append((outer, inner, pss))
        i += 1
    if workers:
        worst = max(max(o, n) for o, n, _ in workers)
        text = "; ".join(f"worker {k + 1}: {o:.1f} MB + {n:.1f} MB (PSS of both {p:.1f} MB)" for k, (o, n, p) in enumerate(workers))
        line(worst * MB <= WORKER_BYTES, f"worker RSS per process (target ≤ {WORKER_BYTES / MB:.0f} MB): {text}")
    out.append("")


def errors_section(cells, out):
    rows = [r for cell in cells.values() for r in cell.rows if " | gw: " in r["note"]]
    if not rows:
        return
    out.append("### What Jailgate's log says about its non-2xx answers\n")
    out.append("For each Jailgate measurement with non-2xx answers: their statuses in the gateway's log, and its "
               "most frequent warning during that measurement.\n")
    for r in sorted(rows, key=lambda r: (r["script"], r["conc"], r["setup"], r["round"])):
        total = r["good"] + r["non2xx"]
        out.append(f"- {r['script']} c={r['conc']}, {LABELS[r['setup']]}, round {r['round']}: {r['non2xx']:,} of "
                   f"{total:,} — {r['note'].partition(' | gw: ')[2]}")
    out.append("")


def checks_section(checks, out):
    bad = [c for c in checks if len(c) == 3 and c[2] != "ok"]
    out.append("### Start-up checks\n")
    if not bad:
        out.append(f"All {len(checks)} start-up checks answered correctly (every setup, every GET script: "
                   "status 200 and the exact body or length).\n")
    else:
        out.append("| setup | script | result |")
        out.append("|---|---|---|")
        for setup, script, result in bad:
            out.append(f"| {LABELS.get(setup, setup)} | {script} | {result} |")
        out.append("")


def plot(cells, png, work):
    if not shutil.which("gnuplot"):
        return False
    scripts = [s for s in ("hello.sh", "hello-busybox.sh", "hello-static")
               if len({c for (sc, c, _) in cells if sc == s}) >= 2]
    if not scripts:
        return False
    data = os.path.join(work, "plot.dat")
    with open(data, "w") as f:
        for script in scripts:
            for setup in SETUPS:
                concs = sorted(c for (sc, c, st) in cells if sc == script and st == setup)
                for conc in concs:
                    f.write(f"{conc} {cells[(script, conc, setup)].rps:.1f}\n")
                f.write("\n\n")
    styles = ["lc rgb '#000000' dt 2", "lc rgb '#d62728' lw 3", "lc rgb '#ff7f0e' lw 2",
              "lc rgb '#e377c2' lw 2", "lc rgb '#1f77b4' lw 2", "lc rgb '#2ca02c' lw 2"]
    lines = [
        f"set terminal pngcairo noenhanced size {560 * len(scripts)},560 font 'sans,10'",
        f"set output '{png}'",
        f"set multiplot layout 1,{len(scripts)} title 'CGI requests per second vs concurrency (wrk, loopback; median of the rounds)'",
        "set logscale x 2", "set xtics (1, 4, 16, 64)", "set xrange [0.8:80]", "set yrange [0:*]",
        "set grid", "set key below font ',9' maxrows 3", "set xlabel 'concurrent connections'", "set ylabel 'req/s'",
    ]
    for i, script in enumerate(scripts):
        plots = []
        for j, setup in enumerate(SETUPS):
            index = i * len(SETUPS) + j
            plots.append(f"'{data}' index {index} using 1:2 with linespoints {styles[j]} pt 7 title '{LABELS[setup]}'")
        lines.append(f"set title '{script}'")
        lines.append("plot " + ", ".join(plots))
    lines.append("unset multiplot")
    script_path = os.path.join(work, "plot.gp")
    with open(script_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return subprocess.run(["gnuplot", script_path]).returncode == 0


def main():
    work, results_md, results_png = sys.argv[1:4]
    cells, meta, checks = load(work)
    out = []
    mode = meta.get("mode", "?")
    minutes, secs = divmod(int(meta.get("duration_s", "0")), 60)
    out.append("# Jailgate benchmark: side by side with the usual CGI setups\n")
    out.append(f"Written by `bench/run.sh{' --quick' if mode == 'quick' else ''}` on {meta.get('date', '?')} "
               f"({mode} run: {meta.get('rounds')} round(s), {meta.get('seconds_per_run')} s per measurement, "
               f"{minutes} min {secs} s in all). Rerun with `bench/run.sh` (as root, Debian).\n")
    out.append(f"- machine: {meta.get('cpu_model')}, {meta.get('cores')} cores, {meta.get('memory')}, "
               f"kernel {meta.get('kernel')}, {meta.get('os')}")
    out.append(f"- versions: Jailgate {meta.get('commit')}, {meta.get('rustc')}; nginx {meta.get('nginx')}; "
               f"lighttpd {meta.get('lighttpd')}; fcgiwrap {meta.get('fcgiwrap')}, spawn-fcgi {meta.get('spawn_fcgi')}; "
               f"wrk {meta.get('wrk')}; busybox {meta.get('busybox')}; dash {meta.get('dash')}")
    out.append(f"- Jailgate: `gateway --workers {meta.get('workers')} --listen 127.0.0.1:… --fastcgi unix:… --socket-group www-data`, "
               "every other flag at its default (workers as uid 1879048191, each CGI as an id of its own, "
               "per-request log line on stderr); the jail "
               "is `gateway jail init DIR --with /usr/bin/busybox` (classic profile)")
    if meta.get("scheduling"):
        out.append(f"- scheduling: {meta.get('scheduling')} for the whole benchmark (see `cpu_group_init` in run.sh: "
                   "it keeps the kernel's per-session autogroups from favouring servers that start a session per CGI)")
    out.append(f"- anchors: nginx (`worker_processes auto`) with `fastcgi_pass` to {meta.get('fcgiwrap_children')} "
               "fcgiwrap processes preforked by spawn-fcgi; lighttpd with `cgi.assign = (\"\" => \"\")`; "
               "both as `www-data`, the same CGI files outside the jail")
    out.append("")
    out.append("How to read it: every setup runs every case once per round, round-robin, and each figure "
               "is the median over the rounds. req/s counts 2xx answers only (wrk `-t2`, `-t1` at c=1, "
               "keep-alive); p50/p99 are wrk's (`--latency`); *errors* are non-2xx answers plus socket errors, summed "
               "over the rounds. *CPU µs/req* is the CPU time (user + system) of all the setup's processes, CGIs "
               "included and the load generator excluded, per 2xx answer, read from a cgroup per server "
               f"(`{meta.get('cpu_accounting')}`; `none` means whole-machine busy time instead). The spawn ceiling is "
               "`bench/spawn_ceiling.c`: N copies of the script posix_spawn'ed with a CGI environment and read "
               "to EOF, no HTTP, no jail. *× ceiling by CPU* is the ceiling's CPU per request divided by the "
               "setup's: what the req/s ratio would be if both were CPU-bound on an otherwise idle machine. "
               "*Other load* is the share of the machine's cores busy with neither the setup nor wrk during "
               "the run (builds and tests sharing the machine): where it is high, req/s and latencies are "
               "depressed and noisy, and the CPU columns are the steadier comparison. Targets are judged "
               "on req/s, as the issue states them.\n")
    targets(cells, meta, out)
    # The measured reasons for the misses and what would close them: written by people, from
    # profiles, kept in bench/MISSES.md so that every run's report carries them.
    misses = os.path.join(os.path.dirname(os.path.abspath(__file__)), "MISSES.md")
    if os.path.exists(misses):
        with open(misses) as f:
            out.append(f.read().rstrip() + "\n")
    out.append("## Results\n")
    for script in ("hello.sh", "hello-busybox.sh", "hello-static", "out1m.sh"):
        if any(k[0] == script for k in cells):
            throughput_table(cells, script, out)
    if any(k[0] == "echo.sh" for k in cells):
        echo_table(cells, out)
    sleep_table(cells, meta, out)
    memory_section(meta, out)
    errors_section(cells, out)
    checks_section(checks, out)
    if plot(cells, results_png, work):
        out.append("![req/s vs concurrency](results.png)\n")
    with open(results_md, "w") as f:
        f.write("\n".join(out).rstrip() + "\n")


if __name__ == "__main__":
    main()
