-- wrk's done() hook (wrk -s scripts/lib/wrk-json.lua): the run's totals as
-- one JSON object, written to the file named by $WRK_JSON, so that the bench
-- scripts read numbers through wrk's scripting API instead of scraping its
-- human-readable report. Times are in microseconds, as wrk records them.
done = function(summary, latency, requests)
  local path = os.getenv("WRK_JSON")
  if path == nil or path == "" then
    io.stderr:write("wrk-json.lua: set WRK_JSON to the output file\n")
    return
  end
  local f = assert(io.open(path, "w"))
  local e = summary.errors
  f:write(string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
  f:close()
end
