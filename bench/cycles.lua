-- An agent console per wrk thread (run with as many connections as threads): claim, reply, resolve, again.
-- Argument: a file with one agent token per line; thread n is the agent of line n.
-- done() prints, for bench/queues.py to read: CYCLES, CLAIMS, EMPTY (claims answered 204), FAILED (any other
-- unexpected status), and CLAIM_MS with every claim's latency in milliseconds.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *out);
]]
local clock = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local threads = {}
local next_agent = 0

function setup(thread)
  next_agent = next_agent + 1
  thread:set("agent", next_agent)
  table.insert(threads, thread)
end

-- Running phase: globals of this thread.
cycles, claims, empty, failed = 0, 0, 0, 0
claim_ms = {}
local headers, step, ticket, sent_at, keys = nil, "claim", nil, 0, 0

function init(args)
  local line = 0
  for token in io.lines(args[1]) do
    line = line + 1
    if line == agent then
      headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
    end
  end
end

function request()
  sent_at = now_ms()
  if step == "claim" then
    return wrk.format("POST", "/v1/agents/me/claim", headers, "")
  elseif step == "reply" then
    keys = keys + 1
    local h = { ["Authorization"] = headers["Authorization"], ["Content-Type"] = "application/json",
                ["Idempotency-Key"] = agent .. "-" .. keys }
    return wrk.format("POST", "/v1/tickets/" .. ticket .. "/replies", h, '{"text":"亲，马上为您处理"}')
  end
  return wrk.format("POST", "/v1/tickets/" .. ticket .. "/resolve", headers, "")
end

function response(status, _, body)
  if step == "claim" then
    claims = claims + 1
    claim_ms[#claim_ms + 1] = now_ms() - sent_at
    if status == 200 then
      ticket = body:match('"id":"([^"]+)"')
      step = "reply"
    elseif status == 204 then
      empty = empty + 1
    else
      failed = failed + 1
    end
  elseif step == "reply" then
    if status == 201 then
      step = "resolve"
    else
      failed = failed + 1
      step = "claim"
    end
  else
    if status == 200 then
      cycles = cycles + 1
    else
      failed = failed + 1
    end
    step = "claim"
  end
end

function done(summary, latency, requests)
  local totals = { CYCLES = 0, CLAIMS = 0, EMPTY = 0, FAILED = 0 }
  local all = {}
  for _, thread in ipairs(threads) do
    totals.CYCLES = totals.CYCLES + thread:get("cycles")
    totals.CLAIMS = totals.CLAIMS + thread:get("claims")
    totals.EMPTY = totals.EMPTY + thread:get("empty")
    totals.FAILED = totals.FAILED + thread:get("failed")
    for _, ms in ipairs(thread:get("claim_ms")) do
      all[#all + 1] = string.format("%.3f", ms)
    end
  end
  for name, value in pairs(totals) do
    io.write(name, " ", value, "\n")
  end
  io.write("SECONDS ", summary.duration / 1e6, "\n")
  io.write("CLAIM_MS ", table.concat(all, " "), "\n")
end
