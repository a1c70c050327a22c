-- gaia-proxy limiter/redisstore: every operation on limiter state, in one
-- script so that one SCRIPT LOAD serves them all. ARGV[1] names the
-- operation; redisstore.go documents each layout of KEYS, ARGV and reply.
--
-- A rate counter is a string: head bucket number (double), head minus
-- the oldest bucket holding units (byte), total, then the SPAN buckets
-- of the ring, indexed by bucket number modulo SPAN. Total and buckets
-- are unsigned integers of CW bytes, CW in {1, 2, 4, 8} the smallest
-- that holds the total (which bounds every bucket), so the length
-- tells CW: #s = 9 + (SPAN + 1) * CW.
-- A quota counter is a hash: u (used), s (seq), e (period end, µs).
-- Times are integer microseconds since the Unix epoch, exact in doubles.

local SPAN = 51 -- limiter.Buckets + 1; redisstore.go checks it

local op = ARGV[1]

local function num(x)
  return string.format('%.0f', x)
end

-- fdiv is floor(a / b) for integers a >= 0, b > 0, exact.
local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function cwidth(total)
  if total < 256 then
    return 1
  elseif total < 65536 then
    return 2
  elseif total < 4294967296 then
    return 4
  end
  return 8
end

local function zeros()
  local r = {}
  for i = 1, SPAN do
    r[i] = 0
  end
  return r
end

-- decode reads a rate counter's header into w.
local function decode(w, s)
  local cw = (#s - 9) / (SPAN + 1)
  local head, off, total = struct.unpack('<dBI' .. cw, s)
  w.s, w.cw, w.head, w.oldest, w.total = s, cw, head, head - off, total
end

-- ring returns w's buckets (ring[b % SPAN + 1] is bucket b), decoding
-- them on first use.
local function ring(w)
  local r = w.ring
  if not r then
    if w.s then
      r = { struct.unpack('<' .. string.rep('I' .. w.cw, SPAN), w.s, 10 + w.cw) }
    else
      r = zeros()
    end
    w.ring = r
  end
  return r
end

-- encode returns w as a string. Unless its ring was decoded, w.add
-- units are added to bucket w.b of the stored string.
local function encode(w)
  local cw = cwidth(w.total)
  local head = struct.pack('<dBI' .. cw, w.head, w.head - w.oldest, w.total)
  if w.ring then
    return head .. struct.pack('<' .. string.rep('I' .. cw, SPAN), unpack(w.ring, 1, SPAN))
  end
  local s = w.s
  local pos = 10 + cw + (w.b % SPAN) * cw
  local v = struct.unpack('<I' .. cw, s, pos) + w.add
  return head .. string.sub(s, 10 + cw, pos - 1) .. struct.pack('<I' .. cw, v) .. string.sub(s, pos + cw)
end

-- firstUnits returns the oldest bucket from k to w.head holding units.
local function firstUnits(w, k)
  local r = ring(w)
  while k < w.head and r[k % SPAN + 1] == 0 do
    k = k + 1
  end
  return k
end

local function now()
  local t = tonumber(ARGV[2])
  if not t then
    local tm = redis.call('TIME')
    t = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
  end
  return t
end

-- Decide.
-- ARGV: 'D', now ('' = TIME), cost, rate TTL slack (ms), quota TTL slack
-- (ms), n, then per limit: kind ('r' or 'q'), limit, cost, shadow ('1'
-- or '0'), then for 'r' the bucket width (µs), for 'q' the number of
-- candidate periods and the end (µs) of each, ascending.
-- KEYS: per limit, its rate counter, or its candidate quota counters.
-- Reply: now, allowed (1, 0, or -1 when a quota counter is missing),
-- then per limit: used, flags (1 exceeded, 2 charged, 4 missing, plus 8
-- times the chosen candidate), reset at (µs, 0 = none), retry at (µs,
-- -1 = one window), charged bucket (rate) or seq (quota).
local function decide()
  local t = now()
  local cost = tonumber(ARGV[3])
  local rateSlack = tonumber(ARGV[4])
  local quotaSlack = tonumber(ARGV[5])
  local n = tonumber(ARGV[6])
  local items, counters = {}, {}
  local missing = false
  local ai, ki = 7, 1
  for i = 1, n do
    local it = { lim = tonumber(ARGV[ai + 1]), cost = tonumber(ARGV[ai + 2]), shadow = ARGV[ai + 3] == '1' }
    if ARGV[ai] == 'r' then
      local g = tonumber(ARGV[ai + 4])
      local key = KEYS[ki]
      ai, ki = ai + 5, ki + 1
      local w = counters[key]
      if not w then
        w = { g = g, total = 0, cost = it.cost }
        counters[key] = w
        local s = redis.call('GET', key)
        if s then
          decode(w, s)
        end
        -- Move the window to the bucket of now (memstore's advance).
        local b = fdiv(t, g)
        if not w.head then
          w.b = b
        elseif b <= w.head then
          w.b = w.head -- the clock stepped back: count in the newest bucket
        elseif w.total == 0 or b - w.head >= SPAN then
          w.ring, w.total, w.head, w.b = zeros(), 0, b, b
        else
          local r = ring(w)
          for k = w.head + 1, b do
            local j = k % SPAN + 1
            w.total = w.total - r[j]
            r[j] = 0
          end
          w.head, w.b = b, b
          if w.total > 0 and w.oldest <= b - SPAN then
            w.oldest = firstUnits(w, b - SPAN + 1)
          end
        end
      end
      it.w = w
      it.used = w.total
    else
      local nc = tonumber(ARGV[ai + 4])
      local j = nc
      for c = 1, nc - 1 do
        if t < tonumber(ARGV[ai + 4 + c]) then
          j = c
          break
        end
      end
      local key = KEYS[ki + j - 1]
      local e = tonumber(ARGV[ai + 4 + j])
      ai, ki = ai + 5 + nc, ki + nc
      it.cand = j - 1
      local q = counters[key]
      if not q then
        q = { quota = true, e = e, cost = it.cost }
        counters[key] = q
        local v = redis.call('HMGET', key, 'u', 's', 'e')
        if v[1] then
          q.used, q.seq, q.hasEnd = tonumber(v[1]), tonumber(v[2]), v[3]
        else
          missing = true
        end
      end
      it.w = q
      it.used = q.used
      it.missing = not q.used
    end
    items[i] = it
  end

  local out = { t, -1 }
  if missing then
    for i = 1, n do
      local it = items[i]
      local flags = 8 * (it.cand or 0)
      if it.missing then
        flags = flags + 4
      end
      out[#out + 1] = 0
      out[#out + 1] = flags
      out[#out + 1] = 0
      out[#out + 1] = 0
      out[#out + 1] = 0
    end
    return out
  end

  -- Check every limit against its usage before this request.
  local allowed, shadowOK = true, true
  for i = 1, n do
    local it = items[i]
    if it.cost > it.lim - it.used then
      it.exceeded = true
      local w = it.w
      if w.quota then
        it.retry = w.e
      elseif it.cost > it.lim or not w.head then
        it.retry = -1
      else
        it.retry = -1
        local need = w.total + it.cost - it.lim
        local r, freed = ring(w), 0
        for b = w.oldest, w.head do
          freed = freed + r[b % SPAN + 1]
          if freed >= need then
            it.retry = (b + SPAN) * w.g
            break
          end
        end
      end
      if it.shadow then
        shadowOK = false
      else
        allowed = false
      end
    end
  end

  -- Charge, each counter once, the cost of the first limit naming it.
  if allowed and cost > 0 then
    for i = 1, n do
      local it = items[i]
      if not it.shadow or shadowOK then
        it.charged = true
        local w = it.w
        if not w.done then
          w.done = true
          if w.quota then
            w.used, w.seq = w.used + w.cost, w.seq + 1
          else
            local b = w.b
            if not w.head then
              w.head, w.oldest, w.ring = b, b, zeros()
            end
            if w.total == 0 then
              w.oldest = b
            end
            w.total = w.total + w.cost
            if not w.ring and cwidth(w.total) ~= w.cw then
              ring(w)
            end
            if w.ring then
              local j = b % SPAN + 1
              w.ring[j] = w.ring[j] + w.cost
            else
              w.add = w.cost
            end
          end
        end
      end
    end
  end

  -- Store what changed.
  for key, w in pairs(counters) do
    if w.quota then
      if not w.hasEnd then
        redis.call('HSET', key, 'u', num(w.used), 's', num(w.seq), 'e', num(w.e))
        redis.call('PEXPIRE', key, num(math.max(math.ceil((w.e - t) / 1000), 0) + quotaSlack))
      elseif w.done then
        redis.call('HSET', key, 'u', num(w.used), 's', num(w.seq))
      end
    elseif w.done then
      local ttl = math.ceil(((w.head + SPAN) * w.g - t) / 1000) + rateSlack
      redis.call('SET', key, encode(w), 'PX', num(math.max(ttl, 1)))
    end
  end

  -- Report the state after the charge.
  out[2] = allowed and 1 or 0
  for i = 1, n do
    local it = items[i]
    local w = it.w
    local flags = 8 * (it.cand or 0)
    if it.exceeded then
      flags = flags + 1
    end
    if it.charged then
      flags = flags + 2
    end
    local reset, x = 0, 0
    if w.quota then
      out[#out + 1] = w.used
      x = w.seq
    else
      out[#out + 1] = w.total
      if w.total > 0 then
        reset = (w.oldest + SPAN) * w.g
      end
      x = w.b
    end
    out[#out + 1] = flags
    out[#out + 1] = reset
    out[#out + 1] = it.retry or 0
    out[#out + 1] = x
  end
  return out
end

-- Undo takes back charges of an earlier Decide, exactly: units still in
-- their bucket's span leave it, and a quota's seq goes back when no
-- other change came since (else it grows, so seqs stay unique).
-- ARGV: 'U', n, then per counter: 'r', bucket width, bucket, cost; or
-- 'q', cost, seq after the charge. KEYS: the counters. Reply: none.
local function undo()
  local n = tonumber(ARGV[2])
  local ai = 3
  for i = 1, n do
    local key = KEYS[i]
    if ARGV[ai] == 'r' then
      local b, c = tonumber(ARGV[ai + 2]), tonumber(ARGV[ai + 3])
      ai = ai + 4
      local s = redis.call('GET', key)
      if s then
        local w = {}
        decode(w, s)
        if b <= w.head and b > w.head - SPAN and w.total > 0 then
          local r = ring(w)
          local j = b % SPAN + 1
          local d = math.min(r[j], c)
          r[j] = r[j] - d
          w.total = w.total - d
          if w.total == 0 then
            redis.call('DEL', key)
          else
            if b == w.oldest then
              w.oldest = firstUnits(w, b)
            end
            redis.call('SET', key, encode(w), 'KEEPTTL')
          end
        end
      end
    else
      local c, seq = tonumber(ARGV[ai + 1]), tonumber(ARGV[ai + 2])
      ai = ai + 3
      local v = redis.call('HMGET', key, 'u', 's')
      if v[1] then
        local s = tonumber(v[2])
        if s == seq then
          s = s - 1
        else
          s = s + 1
        end
        redis.call('HSET', key, 'u', num(math.max(tonumber(v[1]) - c, 0)), 's', num(s))
      end
    end
  end
  return 0
end

-- Seed sets quota counters that do not exist.
-- ARGV: 'S', TTL (ms) until a Decide sets the period end, then per
-- counter: used, seq. KEYS: the counters. Reply: none.
local function seed()
  local ttl = ARGV[2]
  for i = 1, #KEYS do
    local key = KEYS[i]
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'u', ARGV[1 + 2 * i], 's', ARGV[2 + 2 * i])
      redis.call('PEXPIRE', key, ttl)
    end
  end
  return 0
end

-- Refund gives cost back to quota counters whose period has not ended.
-- ARGV: 'R', now ('' = TIME), cost. KEYS: the counters, distinct.
-- Reply: per counter, used and seq after the refund, or -1 and -1 when
-- skipped.
local function refund()
  local t = now()
  local c = tonumber(ARGV[3])
  local out = {}
  for i = 1, #KEYS do
    local key = KEYS[i]
    local v = redis.call('HMGET', key, 'u', 's', 'e')
    if v[1] and not (v[3] and t >= tonumber(v[3])) then
      local used, seq = math.max(tonumber(v[1]) - c, 0), tonumber(v[2]) + 1
      redis.call('HSET', key, 'u', num(used), 's', num(seq))
      out[#out + 1] = used
      out[#out + 1] = seq
    else
      out[#out + 1] = -1
      out[#out + 1] = -1
    end
  end
  return out
end

if op == 'D' then
  return decide()
elseif op == 'U' then
  return undo()
elseif op == 'S' then
  return seed()
elseif op == 'R' then
  return refund()
end
return redis.error_reply('redisstore: unknown operation ' .. tostring(op))
