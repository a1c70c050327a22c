-- Spreads requests over 10,000 users (X-User-ID from a trusted loopback
-- peer), so the limiter works on many subjects as in production.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/bench", { ["X-User-ID"] = "u" .. (n % 10000) })
end
