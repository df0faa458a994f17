#!/usr/bin/env python3
"""Turns `oha --output-format json` (stdin) into bench/run.sh's result line, like wrk-report.lua:

RESULT <requests> <seconds> <p50_us> <p99_us> <non2xx> <socket_errors>

Requests that oha cut off at the end of the run (`-z`) are neither requests nor errors.
"""
import json
import sys


def main():
    doc = json.load(sys.stdin)
    summary, pct = doc["summary"], doc["latencyPercentiles"]
    codes = {int(k): v for k, v in doc.get("statusCodeDistribution", {}).items()}
    errors = sum(n for msg, n in doc.get("errorDistribution", {}).items() if "deadline" not in msg)
    non2xx = sum(n for code, n in codes.items() if not 200 <= code < 300)
    print("RESULT %d %.3f %d %d %d %d" % (
        sum(codes.values()), summary["total"],
        round((pct.get("p50") or 0) * 1e6), round((pct.get("p99") or 0) * 1e6),
        non2xx, errors))


main()
