#!/usr/bin/env python3
"""bench/mixes.sh's helper: h2load's results as one line, and the Markdown report.

usage: mixes_report.py h2load H2LOAD_OUTPUT LOG_FILE
         prints `RESULT requests seconds p50_us p99_us non2xx stream_errors` (wrk-report.lua's
         line) from h2load's summary (main phase) and its --log-file (per request: start µs,
         status, duration µs; -1 = failed stream)
       mixes_report.py report OUT_DIR CLK_TCK C10K_CONNS
         OUT_DIR/runs.tsv: mix name round requests seconds p50_us p99_us non2xx socket_errors
                           cpu_ticks load_idle_pct proxy_idle_pct payload_bytes_per_request
                           new_upstream_connections (accepted by the origin during the run)
         (and tls.tsv, skipped.tsv, warnings.tsv, meta.txt from the same directory)
"""
import os
import re
import statistics
import sys

# mix: (title, throughput unit, CPU unit, notes)
MIXES = {
    "tls-ecdsa": ("TLS 1.3 handshakes, ECDSA P-256 certificate", "handshakes/s", "µs/handshake",
                  "`wrk -t1 -c50 -H 'Connection: close'` over https: a new TCP connection and a TLS 1.3 "
                  "handshake per request. Left alone, wrk resumes: it keeps each connection's last "
                  "session (SSL_clear) and offers it on the next connect; by default the script "
                  "preloads a shim into wrk that drops it, so every handshake is a full one "
                  "(certificate signature included); TLS_RESUME=1 measures resumed ones. Tickets and "
                  "session caches are each server's default. wrk's latency starts once the "
                  "connection is up: p50/p99 exclude connect and handshake. CPU per handshake "
                  "includes the request, the proxying and the close."),
    "tls-rsa": ("TLS 1.3 handshakes, RSA 2048 certificate", "handshakes/s", "µs/handshake",
                "As tls-ecdsa, with an RSA 2048 certificate (the server signs with RSA-PSS)."),
    "h2": ("HTTP/2 over TLS 1.3, 10 connections x 100 concurrent streams", "req/s", "µs/req",
           "`h2load -t1 -c10 -m100 --warm-up-time=1s`, ECDSA certificate, 2-byte responses; "
           "requests, latency and CPU over the main phase only (after h2load's warm-up). "
           "Upstream stays HTTP/1.1: up to 1,000 requests in flight need as many upstream "
           "connections; nginx (`keepalive 128`) keeps 128 idle ones and closes the rest, "
           "Portico keeps up to `max_connections` (its default `upstream_keepalive_pool_size`; "
           "Pingora's own default is 128) and HAProxy (`http-reuse always`) keeps them all: see "
           "\"upstream conns / 1k req\"."),
    "64k": ("64 KiB responses, HTTP/1.1 keep-alive", "req/s", "µs/req",
            "`wrk -t1 -c50`; MiB/s and CPU per GiB count response bodies only."),
    "1m": ("1 MiB responses, HTTP/1.1 keep-alive", "req/s", "µs/req",
           "`wrk -t1 -c20`; MiB/s and CPU per GiB count response bodies only."),
    "upload": ("4 MiB POST bodies, HTTP/1.1 keep-alive", "uploads/s", "µs/upload",
               "`wrk -t1 -c16`, the origin reads each body in full before it answers `200 ok`; "
               "MiB/s and CPU per GiB count request bodies."),
    "c10k": ("{c10k} concurrent keep-alive connections, 2-byte GETs", "req/s", "µs/req",
             "`wrk -t1 -c{c10k} --timeout 10s`: every connection active; each run opens its "
             "{c10k} connections anew (inside the measured window). With that many requests in "
             "flight each proxy needs about as many upstream connections, and keeps few idle "
             "(nginx: 128; Portico: up to `max_connections`; HAProxy stops keeping idle ones when "
             "its fds run short, `tune.pool-high-fd-ratio`): with nginx and HAProxy most requests "
             "open a new upstream connection, see "
             "\"upstream conns / 1k req\". Client plus upstream connections can reach this VM's "
             "fd limit (above): nginx's `worker_connections` is that limit - 100 (client and "
             "upstream together) and, when short, closes idle keep-alive clients (\"worker_connections "
             "are not enough, reusing connections\"), which wrk counts as errors; HAProxy runs with "
             "`no strict-limits`; Portico gets `max_connections` above the client count when the "
             "binary knows the key. nginx listens with `backlog=4096` (somaxconn; its default is "
             "511, HAProxy and Pingora ask for more)."),
    "threads2": ("two workers per proxy, 2-byte keep-alive GETs, nothing pinned", "req/s", "µs/req",
                 "`wrk -t2 -c100`; Portico `threads: 2` (work stealing on, its default), nginx "
                 "`worker_processes 2` (CPU = master + workers), HAProxy `nbthread 2`. Proxy, "
                 "origin (one worker) and wrk share both vCPUs: req/s is bounded by the whole "
                 "machine, not by the proxy; CPU per request is the comparable figure. "
                 "\"idle %\" is the whole machine's."),
}
BYTE_MIXES = {"64k", "1m", "upload"}
LABEL = {"nginx": "nginx", "haproxy": "HAProxy", "portico": "Portico"}


def percentile(sorted_values, pct):
    if not sorted_values:
        return 0
    k = max(0, min(len(sorted_values) - 1, int(round(pct / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def h2load(out_path, log_path):
    text = open(out_path, errors="replace").read()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    r = re.search(r"finished in [0-9.]+s, ([0-9.]+) req/s", text)
    if not m or not s:
        return None
    done, failed = int(m.group(3)), int(m.group(5))
    non2xx = int(s.group(2)) + int(s.group(3)) + int(s.group(4))
    stream_errors = max(0, failed - int(s.group(3)) - int(s.group(4)))   # failed counts 4xx/5xx
    rps = float(r.group(1)) if r else 0.0
    seconds = done / rps if rps else 0.0
    durations = []
    if os.path.exists(log_path):
        with open(log_path) as f:
            for line in f:
                fields = line.split("\t")
                if len(fields) >= 3 and fields[1] != "-1":
                    durations.append(int(fields[2]))
    durations.sort()
    return (f"RESULT {done} {seconds:.3f} {percentile(durations, 50)} {percentile(durations, 99)} "
            f"{non2xx} {stream_errors}")


def read_tsv(path, min_fields):
    rows = []
    if os.path.exists(path):
        for line in open(path):
            f = line.rstrip("\n").split("\t")
            if len(f) >= min_fields:
                rows.append(f)
    return rows


def fmt_ratio(a, b):
    return f"{a / b:.2f}" if a == a and b == b and b else "-"


def report(out_dir, clk_tck, c10k):
    meta = os.path.join(out_dir, "meta.txt")
    print()
    print("## Traffic mixes: nginx, HAProxy, Portico (bench/mixes.sh)")
    print()
    if os.path.exists(meta):
        for line in open(meta):
            print(f"- {line.strip()}")
        print()
    print("Throughput: median of the rounds. p50/p99: median of the rounds' percentiles. CPU: "
          "utime+stime of the proxy process over all rounds / all requests (or bytes). "
          "Ratios: throughput ratio >1 and CPU ratio <1 are better than the reference. "
          "\"load core idle\": how long the core of wrk + origin sat idle (0: the load generator "
          "was saturated, so throughput is understated and CPU per request is the fair figure); "
          "\"proxy core idle\": the same for the proxy's core (other work on the machine shows "
          "there too). \"upstream conns / 1k req\": connections the origin accepted during the run "
          "per 1,000 requests: new upstream connections. A proxy that keeps its upstream "
          "connections shows ~0, plus up to one per client connection (the previous run's "
          "requests in flight when it stopped were aborted, their upstream connections closed) "
          "and Portico's health probes (every second per origin port, by every Portico running).")
    runs = {}
    order = []
    for f in read_tsv(os.path.join(out_dir, "runs.tsv"), 14):
        mix, name = f[0], f[1]
        reqs, secs, p50, p99, non2xx, sockerr, ticks, lidle, pidle, payload = (
            int(f[3]), float(f[4]), int(f[5]), int(f[6]), int(f[7]), int(f[8]), int(f[9]),
            int(f[10]), int(f[11]), int(f[12]))
        upconns = int(f[13])
        if mix not in runs:
            runs[mix] = {}
            order.append(mix)
        r = runs[mix].setdefault(name, {"tput": [], "p50": [], "p99": [], "err": 0, "ticks": 0,
                                        "reqs": 0, "lidle": [], "pidle": [], "round_cpu": [],
                                        "payload": payload, "up": []})
        r["tput"].append(reqs / secs if secs else 0.0)
        r["p50"].append(p50)
        r["p99"].append(p99)
        r["err"] += non2xx + sockerr
        r["ticks"] += ticks
        r["reqs"] += reqs
        r["lidle"].append(lidle)
        r["up"].append(upconns / reqs * 1000 if reqs else float("nan"))
        r["pidle"].append(pidle)
        r["round_cpu"].append(ticks * 1e6 / clk_tck / reqs if reqs else float("nan"))
    skipped = read_tsv(os.path.join(out_dir, "skipped.tsv"), 3)
    warnings = read_tsv(os.path.join(out_dir, "warnings.tsv"), 4)
    tls = read_tsv(os.path.join(out_dir, "tls.tsv"), 4)

    for mix in order + [m for m in MIXES if m not in order and any(s[0] == m for s in skipped)]:
        title, unit, cpu_unit, notes = MIXES.get(mix, (mix, "req/s", "µs/req", ""))
        title, notes = title.format(c10k=f"{c10k:,}"), notes.format(c10k=c10k)
        rows = {}
        for name, r in runs.get(mix, {}).items():
            cpu = r["ticks"] * 1e6 / clk_tck / r["reqs"] if r["reqs"] else float("nan")
            rows[name] = {
                "tput": statistics.median(r["tput"]),
                "p50": statistics.median(r["p50"]),
                "p99": statistics.median(r["p99"]),
                "err": r["err"],
                "cpu": cpu,
                "n": len(r["tput"]),
                "lidle": statistics.median(r["lidle"]),
                "pidle": statistics.median(r["pidle"]),
                "up": statistics.median(r["up"]),
                "payload": r["payload"],
                "round_cpu": r["round_cpu"],
            }
        pinned = mix != "threads2"
        byte_mix = mix in BYTE_MIXES
        n_rounds = max((r["n"] for r in rows.values()), default=0)
        print()
        print(f"### {mix}: {title}")
        print()
        head = ["proxy", f"{unit} (median of {n_rounds})"]
        if byte_mix:
            head.append("MiB/s")
        head += ["p50 ms", "p99 ms", "errors", f"CPU {cpu_unit}"]
        if byte_mix:
            head.append("CPU ms/GiB")
        head += [f"{unit} vs nginx", "CPU vs nginx", f"{unit} vs HAProxy", "CPU vs HAProxy",
                 "upstream conns / 1k req"]
        head += ["load core idle %", "proxy core idle %"] if pinned else ["machine idle %"]
        print("| " + " | ".join(head) + " |")
        print("|---|" + "---:|" * (len(head) - 1))
        for name, r in rows.items():
            cells = [LABEL.get(name, name), f"{r['tput']:.0f}"]
            if byte_mix:
                cells.append(f"{r['tput'] * r['payload'] / 2**20:.0f}")
            cells += [f"{r['p50'] / 1000:.3f}", f"{r['p99'] / 1000:.3f}", str(r["err"]), f"{r['cpu']:.1f}"]
            if byte_mix:
                cells.append(f"{r['cpu'] / r['payload'] * 2**30 / 1000:.0f}" if r["payload"] else "-")
            for ref in ("nginx", "haproxy"):
                if ref in rows:
                    cells += [fmt_ratio(r["tput"], rows[ref]["tput"]), fmt_ratio(r["cpu"], rows[ref]["cpu"])]
                else:
                    cells += ["-", "-"]
            cells.append(f"{r['up']:.1f}")
            cells += [f"{r['lidle']:.0f}", f"{r['pidle']:.0f}"] if pinned else [f"{r['lidle']:.0f}"]
            print("| " + " | ".join(cells) + " |")
        for s in skipped:
            if s[0] == mix:
                print(f"| {LABEL.get(s[1], s[1])} | failed its check, not measured: {s[2]} |")
        print()
        print(notes)
        bullets = []
        for t in tls:
            if t[0] != mix:
                continue
            if len(t) >= 7:
                bullets.append(f"{LABEL.get(t[1], t[1])}: {t[2]}, {t[3]}, key exchange {t[4]}, "
                               f"signature {t[5]} (a default OpenSSL client, as wrk); TLS 1.2 {t[6]}")
            else:
                bullets.append(f"{LABEL.get(t[1], t[1])}: {t[2]}, {t[3]} (h2load)")
        resume = os.path.join(out_dir, "resume.txt")
        if mix.startswith("tls-") and os.path.exists(resume):
            bullets += [line.strip() for line in open(resume) if line.strip()]
        bullets += [f"{LABEL.get(w[1], w[1])} log: {w[2]} x `{w[3]}`" for w in warnings if w[0] == mix]
        if bullets:
            print()
            for b in bullets:
                print(f"- {b}")
        if n_rounds > 1:
            print()
            print(f"CPU {cpu_unit}, round by round:")
            print()
            print(f"| proxy | rounds 1-{n_rounds} |")
            print("|---|---|")
            for name, r in rows.items():
                print(f"| {LABEL.get(name, name)} | {' '.join(f'{c:.1f}' for c in r['round_cpu'])} |")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "h2load":
        line = h2load(sys.argv[2], sys.argv[3])
        if line is None:
            sys.exit(1)
        print(line)
    elif len(sys.argv) == 5 and sys.argv[1] == "report":
        report(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)


main()
