-- wrk script for bench/soak.sh: a mixed workload, one request kind after another on each
-- connection. Outcomes are counted by the gateway itself (/metrics), so this only chooses.
local kinds = {
  { "GET", "/cgi-bin/hello", nil },
  { "GET", "/cgi-bin/hello", nil },
  { "GET", "/cgi-bin/hello", nil },
  { "POST", "/cgi-bin/echo", string.rep("0123456789abcdef", 4096) },  -- 64 KiB
  { "GET", "/cgi-bin/big", nil },       -- 1 MiB of output
  { "GET", "/cgi-bin/slow", nil },      -- sleeps 0.2 s
  { "GET", "/cgi-bin/fail", nil },      -- exits 1 without a header: 502
  { "GET", "/cgi-bin/missing", nil },   -- 404
  { "GET", "/cgi-bin/leaver", nil },    -- leaves a background job, which its worker kills
}
local next_kind = 0

request = function()
  next_kind = next_kind % #kinds + 1
  local kind = kinds[next_kind]
  return wrk.format(kind[1], kind[2], nil, kind[3])
end
