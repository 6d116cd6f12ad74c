-- wrk script for scripts/bench-service: GET the URL given to wrk and print one
-- machine-readable line at the end. With BENCH_RATE_PER_THREAD (requests per
-- second, set by bench-service), each wrk thread paces its connections on a fixed
-- schedule (see bench_service_post.lua for how).
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

local rate = tonumber(os.getenv("BENCH_RATE_PER_THREAD") or "")
if rate and rate > 0 then
	local interval = 1000 / rate
	local next_slot = nil
	-- Called before each request after a connection's first one: claim the
	-- thread's next slot and wait for it (no wait when behind schedule).
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
	local e = summary.errors
	io.write(string.format(
		"BENCH requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
		"non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
		summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
		latency:percentile(99), latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
