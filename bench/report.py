#!/usr/bin/env python3
"""Turns bench/run.sh's raw results into one markdown table.

usage: report.py RUNS_TSV IDLE_TSV CLK_TCK IDLE_CONNS
RUNS_TSV: name round requests seconds p50_us p99_us non2xx socket_errors cpu_ticks [load_idle_pct]
IDLE_TSV: name connections_held rss_before_kib rss_held_kib
"""
import statistics
import sys


def main():
    runs_path, idle_path, clk_tck, idle_conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    runs = {}
    for line in open(runs_path):
        f = line.split("\t")
        if len(f) < 9:
            continue
        name = f[0]
        reqs, secs, p50, p99, non2xx, sockerr, ticks = (
            int(f[2]), float(f[3]), int(f[4]), int(f[5]), int(f[6]), int(f[7]), int(f[8]))
        r = runs.setdefault(name, {"rps": [], "p50": [], "p99": [], "err": 0, "ticks": 0, "reqs": 0, "idle": []})
        if len(f) > 9:
            r["idle"].append(int(f[9]))
        r["rps"].append(reqs / secs if secs else 0.0)
        r["p50"].append(p50)
        r["p99"].append(p99)
        r["err"] += non2xx + sockerr
        r["ticks"] += ticks
        r["reqs"] += reqs
    idle = {}
    for line in open(idle_path):
        f = line.split()
        if len(f) == 4:
            idle[f[0]] = (int(f[1]), int(f[2]), int(f[3]))

    rows = {}
    for name, r in runs.items():
        cpu_us = r["ticks"] * 1e6 / clk_tck / r["reqs"] if r["reqs"] else float("nan")
        rows[name] = {
            "rps": statistics.median(r["rps"]),
            "p50": statistics.median(r["p50"]),
            "p99": statistics.median(r["p99"]),
            "err": r["err"],
            "cpu": cpu_us,
            "n": len(r["rps"]),
            "load_idle": statistics.median(r["idle"]) if r["idle"] else float("nan"),
        }

    def ratio(name, ref, key):
        if ref not in rows or not rows[ref][key]:
            return "-"
        return f"{rows[name][key] / rows[ref][key]:.2f}"

    print(f"| proxy | req/s (median of {max((r['n'] for r in rows.values()), default=0)}) | p50 ms | p99 ms "
          "| errors | CPU µs/req | req/s vs nginx | req/s vs bare | CPU/req vs nginx | CPU/req vs bare "
          f"| RSS idle MiB | RSS {idle_conns} conns MiB | load core idle % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        held, before, during = idle.get(name, (0, 0, 0))
        held_note = "" if str(held) == idle_conns else f" ({held} held)"
        print(f"| {name} | {r['rps']:.0f} | {r['p50'] / 1000:.3f} | {r['p99'] / 1000:.3f} | {r['err']} "
              f"| {r['cpu']:.1f} | {ratio(name, 'nginx', 'rps')} | {ratio(name, 'bare', 'rps')} "
              f"| {ratio(name, 'nginx', 'cpu')} | {ratio(name, 'bare', 'cpu')} "
              f"| {before / 1024:.1f} | {during / 1024:.1f}{held_note} | {r['load_idle']:.0f} |")


main()
