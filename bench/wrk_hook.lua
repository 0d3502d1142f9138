-- wrk script for bench/http_bench.py: POST a CDS Hooks request, one pre-signed JWT per request.
--
-- wrk -t T -c C -d D -s bench/wrk_hook.lua URL -- BODY_FILE TOKENS_FILE T PLACEHOLDER MODE [MARKER]
--   BODY_FILE    the request JSON; its hookInstance is PLACEHOLDER, rewritten per request so
--                every call has its own hookInstance
--   TOKENS_FILE  one JWT per line; thread k of T sends lines k, k+T, k+2T, ... each once
--   MODE         "once": a token is never sent twice; when a thread runs out it resends its last
--                token and counts it in `exhausted` (the caller then reruns with more tokens);
--                "cycle": tokens are reused (the bare floor, which verifies nothing)
--   MARKER       optional: count 200 responses whose body contains this string (`marked`)
-- done() prints one line `BENCH_JSON {...}` with the summary the benchmark reads.

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   local body_file, tokens_file = args[1], args[2]
   local nthreads, placeholder, mode, marker = tonumber(args[3]), args[4], args[5], args[6]
   local f = assert(io.open(body_file, "rb"))
   local body = f:read("*a")
   f:close()
   local s, e = body:find(placeholder, 1, true)
   assert(s, "hookInstance placeholder not found in " .. body_file)
   -- keep the first 24 characters of the placeholder uuid, replace the last 12 hex digits
   prefix = body:sub(1, s + 23)
   suffix = body:sub(e + 1)
   tokens = {}
   local i = 0
   for line in io.lines(tokens_file) do
      if line ~= "" then
         if i % nthreads == tid then
            tokens[#tokens + 1] = line
         end
         i = i + 1
      end
   end
   assert(#tokens > 0, "no tokens for thread " .. tid)
   cycle = (mode == "cycle")
   next_token = 1
   sent = 0
   exhausted = 0
   marked = 0
   head = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port ..
      "\r\nContent-Type: application/json\r\nContent-Length: " .. #body ..
      "\r\nAuthorization: Bearer "
   if marker ~= nil and marker ~= "" then
      response = function(status, headers, resp_body)
         if status == 200 and resp_body:find(marker, 1, true) then
            marked = marked + 1
         end
      end
   end
end

function request()
   local token = tokens[next_token]
   if token == nil then
      if cycle then
         next_token = 1
         token = tokens[1]
      else
         token = tokens[#tokens]
         exhausted = exhausted + 1
      end
   end
   next_token = next_token + 1
   sent = sent + 1
   local instance = string.format("%04x%08x", tid, sent)
   return head .. token .. "\r\n\r\n" .. prefix .. instance .. suffix
end

function done(summary, latency, requests)
   local exhausted_all, marked_all = 0, 0
   for _, t in ipairs(threads) do
      exhausted_all = exhausted_all + (t:get("exhausted") or 0)
      marked_all = marked_all + (t:get("marked") or 0)
   end
   local err = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, ' ..
      '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
      '"exhausted": %d, "marked": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes, err.status, err.connect, err.read,
      err.write, err.timeout, exhausted_all, marked_all, latency:percentile(50),
      latency:percentile(99), latency.max))
end
