-- wrk reporter for bench/run.sh: one machine-readable line per run.
-- RESULT <requests> <seconds> <p50_us> <p99_us> <non2xx> <socket_errors>
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.3f %d %d %d %d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
