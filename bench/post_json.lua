-- wrk script for bench/bench_ingest.py: POST one JSON webhook per request, and print the
-- run's figures as one JSON line (prefixed BENCH) for the driver to parse.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "push"
wrk.body = '{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246",' ..
  '"after":"0000000000000000000000000000000000000000","repository":{"id":1296269,' ..
  '"name":"hookyard","full_name":"example/hookyard","private":false,"owner":' ..
  '{"login":"example","id":1}},"pusher":{"name":"octocat","email":"octocat@example.com"},' ..
  '"commits":[{"id":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","message":"Update README",' ..
  '"timestamp":"2026-01-01T12:00:00Z","author":{"name":"Octo Cat","email":"octocat@example.com"},' ..
  '"added":[],"removed":[],"modified":["README.md"]}]}'

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end

-- With BENCH_REQUESTS_PER_THREAD set, each thread stops once that many of its requests
-- have been answered (a fixed number of webhooks rather than a fixed time), and says so
-- on a line of its own: the driver then ends wrk (whose main thread sleeps for all of -d).
local per_thread = tonumber(os.getenv("BENCH_REQUESTS_PER_THREAD") or "")
if per_thread then
  local answered = 0
  response = function(status, headers, body)
    answered = answered + 1
    if answered == per_thread then
      io.write("STOPPED\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end
