-- Replays the request lines of a file (BENCH_REQUESTS), one after another, each thread from its
-- own starting point. A line: METHOD <TAB> PATH <TAB> AUTHORIZATION <TAB> X-USER-ID <TAB> BODY
-- (empty fields are left out). Counts non-2xx answers and prints the figures as one JSON line.

local threads = {}
local lines = {}

local function split(line)
  local fields = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    fields[#fields + 1] = field
  end
  return fields
end

local function load()
  local path = os.getenv("BENCH_REQUESTS")
  local file = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  local out = {}
  for line in file:lines() do
    if line ~= "" then
      local f = split(line)
      local headers = {}
      if f[3] ~= nil and f[3] ~= "" then headers["Authorization"] = f[3] end
      if f[4] ~= nil and f[4] ~= "" then headers["X-User-Id"] = f[4] end
      local body = f[5]
      if body ~= nil and body ~= "" then
        headers["Content-Type"] = "application/json"
      else
        body = nil
      end
      out[#out + 1] = wrk.format(f[1], f[2], headers, body)
    end
  end
  file:close()
  return out
end

function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  lines = load()
  position = (id * 7919) % #lines
  non2xx = 0
  responses = 0
end

function request()
  position = position + 1
  if position > #lines then position = 1 end
  return lines[position]
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local non2xx_total, responses_total = 0, 0
  for _, thread in ipairs(threads) do
    non2xx_total = non2xx_total + (thread:get("non2xx") or 0)
    responses_total = responses_total + (thread:get("responses") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"responses":%d,"non2xx":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, responses_total, non2xx_total,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
