-- wrk script for scripts/bench-service: POST /api/v1/steps/noop with {"sleep_ms":0},
-- the token (BENCH_TOKEN) and a unique Idempotency-Key per request
-- (BENCH_KEY_PREFIX-<thread>-<counter>); counts the answers by status and prints
-- one machine-readable line at the end. The keys of the requests still unanswered
-- when wrk stops (in flight at the deadline, cut by a socket error, or the one request
-- wrk builds with request() in thread 1 to check the script and never sends) are written
-- to BENCH_UNANSWERED_FILE, one a line, so that bench-service can ask the server
-- about them (the answers carry their run's idempotency_key).
--
-- With BENCH_RATE_PER_THREAD (requests per second), each wrk thread keeps a fixed
-- schedule: before every request after a connection's first one, wrk calls delay(),
-- which claims the thread's next slot (one every 1000/rate ms) and waits until it.
-- The offered rate is thus fixed as long as a free connection exists at each slot
-- (latency < connections per thread x interval); behind schedule, requests go at
-- once. Latency is measured by wrk from the moment a request is written.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
	ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
	return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local thread_count = 0

-- In the main Lua state: number the threads so that keys differ between them.
function setup(thread)
	thread_count = thread_count + 1
	thread:set("thread_no", thread_count)
	table.insert(threads, thread)
end

local token = os.getenv("BENCH_TOKEN") or ""
local prefix = os.getenv("BENCH_KEY_PREFIX") or "bench"
local body = '{"sleep_ms":0}'
local counter = 0
status_202 = 0
status_200 = 0
status_other = 0
unanswered = {}

function request()
	counter = counter + 1
	local key = string.format("%s-%d-%d", prefix, thread_no or 0, counter)
	unanswered[key] = true
	return wrk.format("POST", "/api/v1/steps/noop", {
		["Authorization"] = "Bearer " .. token,
		["Content-Type"] = "application/json",
		["Idempotency-Key"] = key,
	}, body)
end

function response(status, headers, resp_body)
	local key = resp_body and resp_body:match('"idempotency_key":"([^"]*)"')
	if key then
		unanswered[key] = nil
	end
	if status == 202 then
		status_202 = status_202 + 1
	elseif status == 200 then
		status_200 = status_200 + 1
	else
		status_other = status_other + 1
	end
end

local rate = tonumber(os.getenv("BENCH_RATE_PER_THREAD") or "")
if rate and rate > 0 then
	local interval = 1000 / rate
	local next_slot = nil
	function delay()
		local t = now_ms()
		if next_slot == nil then
			next_slot = t
		end
		next_slot = next_slot + interval
		local wait = next_slot - t
		if wait < 0 then
			return 0
		end
		return math.floor(wait + 0.5)
	end
end

function done(summary, latency, requests)
	local s202, s200, other, open = 0, 0, 0, 0
	local path = os.getenv("BENCH_UNANSWERED_FILE")
	local file = path and assert(io.open(path, "w"))
	for _, thread in ipairs(threads) do
		s202 = s202 + thread:get("status_202")
		s200 = s200 + thread:get("status_200")
		other = other + thread:get("status_other")
		for key in pairs(thread:get("unanswered")) do
			open = open + 1
			if file then
				file:write(key, "\n")
			end
		end
	end
	if file then
		file:close()
	end
	local e = summary.errors
	io.write(string.format(
		"BENCH requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
		"non2xx=%d connect=%d read=%d write=%d timeout=%d s202=%d s200=%d sother=%d unanswered=%d\n",
		summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
		latency:percentile(99), latency.max, e.status, e.connect, e.read, e.write, e.timeout,
		s202, s200, other, open))
end
