-- gaia-proxy limiter/redisstore: every operation on limiter state, in one
-- script so that one SCRIPT LOAD serves them all. ARGV[1] names the
-- operation, ARGV[2] carries its arguments packed little-endian (numbers
-- as doubles: integers are exact below 2^53), and the reply is packed the
-- same way. codec.go writes and reads both sides.
--
-- Times are integer microseconds since the Unix epoch.
--
-- A rate counter is a string: the newest bucket number H (double), the
-- byte width CW of counts, the total (CW bytes), then the counts of
-- buckets H-N+1 .. H (CW bytes each), the first of them not zero. CW in
-- {1, 2, 4, 8} is the smallest that holds the total, which bounds every
-- count. Only the buckets from the oldest holding units to the newest
-- are stored: at most SPAN, often a few.
--
-- A quota counter is a string: used, seq, and the period end (doubles;
-- end 0 until a Decide has seen the counter).

local SPAN = 51 -- limiter.Buckets + 1, set by redisstore.go

local op, blob = ARGV[1], ARGV[2]

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

-- Decide decides a batch of requests, one after the other, each as if
-- alone. Arguments: number of requests (uint16), then per request: now
-- (< 0: Redis TIME), cost, rate TTL slack (ms), quota TTL slack (ms),
-- number of limits (uint16), then per limit: kind (byte: 1 rate, 2
-- quota), shadow (byte), limit, cost, then for a rate limit its bucket
-- width and its key (uint16 index into KEYS), for a quota the number of
-- candidate periods (byte), then the end and the key of each, ascending.
-- KEYS: every counter the batch names, once.
-- Reply, per request: now, allowed (1, 0, or -1 when a quota counter is
-- missing), then per limit: used, flags (byte: 1 exceeded, 2 charged, 4
-- missing, plus 8 times the chosen candidate), reset at (0: none), retry
-- at (-1: one window), charged bucket (rate) or seq (quota).
if op == 'D' then
  local HF = { '<dBI1', '<dBI2', nil, '<dBI4', nil, nil, nil, '<dBI8' }
  local CF = { '<I1', '<I2', nil, '<I4', nil, nil, nil, '<I8' }
  local vals = redis.call('MGET', unpack(KEYS))
  local ttls = {}
  local out = {}
  local clock
  -- Per limit of the request being decided: limit, cost, shadow, counter
  -- index, chosen candidate, exceeded, charged, retry at.
  local Ilim, Icost, Ish, Iw, Icand, Iexc, Ichg, Iretry = {}, {}, {}, {}, {}, {}, {}, {}
  -- Per counter of the request: key index, is quota, width or end, cost
  -- of its first limit, charged; a rate counter's stored string, count
  -- width, bucket of its first count, counts, first live count, buckets
  -- to append, head, oldest, total, bucket of now; a quota's used, seq,
  -- and whether it has its end.
  local Wk, Wq, Wg, Wcost, Wdone = {}, {}, {}, {}, {}
  local Ws, Wcw, Wbase, Wn, Wfirst, Wpad, Whead, Wold, Wtot, Wb = {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
  local Wused, Wseq, Wend = {}, {}, {}
  local ws = {} -- key index: counter index, for the request being decided
  local m, pos = struct.unpack('<H', blob)
  for _ = 1, m do
    local t, cost, rslack, qslack, n
    t, cost, rslack, qslack, n, pos = struct.unpack('<ddddH', blob, pos)
    if t < 0 then
      if not clock then
        local tm = redis.call('TIME')
        clock = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
      end
      t = clock
    end
    local nw = 0
    local missing = false
    for i = 1, n do
      local kind, shadow, lim, c, g, k
      local cand = 0
      kind, shadow, lim, c, pos = struct.unpack('<BBdd', blob, pos)
      if kind == 1 then
        g, k, pos = struct.unpack('<dH', blob, pos)
      else
        local nc
        nc, pos = struct.unpack('<B', blob, pos)
        for j = 1, nc do
          local en, kj
          en, kj, pos = struct.unpack('<dH', blob, pos)
          if not k and (t < en or j == nc) then
            k, g, cand = kj, en, j - 1
          end
        end
      end
      local w = ws[k]
      if not w then
        nw = nw + 1
        w = nw
        ws[k] = w
        local s = vals[k]
        Wk[w], Wq[w], Wg[w], Wcost[w], Wdone[w] = k, kind ~= 1, g, c, false
        if kind ~= 1 then
          if s then
            local used, seq, qe = struct.unpack('<ddd', s)
            Wused[w], Wseq[w], Wend[w] = used, seq, qe ~= 0
          else
            Wused[w], Wseq[w], Wend[w] = false, 0, false
            missing = true
          end
        else
          -- Move the window to the bucket of now.
          local b = math.floor(t / g)
          if b * g > t then
            b = b - 1
          elseif (b + 1) * g <= t then
            b = b + 1
          end
          Ws[w], Wcw[w], Wbase[w], Wn[w], Wfirst[w], Wpad[w], Whead[w], Wold[w], Wtot[w], Wb[w] = false, 1, 0, 0, 1, 0, b, 0, 0, b
          if s then
            local cw = string.byte(s, 9)
            local head, _, total = struct.unpack(HF[cw], s)
            local nn = (#s - 9 - cw) / cw
            local base = head - nn + 1
            if b <= head then
              -- Now or the clock stepped back: count in the newest bucket.
              Ws[w], Wcw[w], Wbase[w], Wn[w], Whead[w], Wold[w], Wtot[w], Wb[w] = s, cw, base, nn, head, base, total, head
            elseif b - head < SPAN then
              -- Counts of buckets below b-SPAN+1 leave the window.
              local f, cf, off = 1, CF[cw], 10 + cw
              for j = 1, b - SPAN + 1 - base do
                total = total - struct.unpack(cf, s, off + (j - 1) * cw)
                f = j + 1
              end
              if total > 0 then
                while struct.unpack(cf, s, off + (f - 1) * cw) == 0 do
                  f = f + 1
                end
                Ws[w], Wcw[w], Wbase[w], Wn[w], Wfirst[w], Wpad[w], Wold[w], Wtot[w] = s, cw, base, nn, f, b - head, base + f - 1, total
              end
            end
          end
        end
      end
      Ilim[i], Icost[i], Ish[i], Iw[i], Icand[i], Iexc[i], Ichg[i], Iretry[i] = lim, c, shadow == 1, w, cand, false, false, 0
    end
    for w = 1, nw do
      ws[Wk[w]] = nil
    end

    if missing then
      out[#out + 1] = struct.pack('<dd', t, -1)
      for i = 1, n do
        local w = Iw[i]
        local flags = 8 * Icand[i]
        if Wq[w] and not Wused[w] then
          flags = flags + 4
        end
        out[#out + 1] = struct.pack('<dBddd', 0, flags, 0, 0, 0)
      end
    else
      -- Check every limit against its usage before this request.
      local allowed, shadowOK = true, true
      for i = 1, n do
        local w, c, lim = Iw[i], Icost[i], Ilim[i]
        local used = Wtot[w]
        if Wq[w] then
          used = Wused[w]
        end
        if c > lim - used then
          Iexc[i] = true
          if Wq[w] then
            Iretry[i] = Wg[w]
          else
            Iretry[i] = -1
            if c <= lim and used > 0 then
              -- Walk from the oldest bucket until enough units have left.
              local need, freed, cw, s = used + c - lim, 0, Wcw[w], Ws[w]
              local cf, off = CF[cw], 10 + cw
              for j = Wfirst[w], Wn[w] do
                freed = freed + struct.unpack(cf, s, off + (j - 1) * cw)
                if freed >= need then
                  Iretry[i] = (Wbase[w] + j - 1 + SPAN) * Wg[w]
                  break
                end
              end
            end
          end
          if Ish[i] then
            shadowOK = false
          else
            allowed = false
          end
        end
      end

      -- Charge, each counter once, the cost of the first limit naming it.
      if allowed and cost > 0 then
        for i = 1, n do
          if shadowOK or not Ish[i] then
            Ichg[i] = true
            local w = Iw[i]
            if not Wdone[w] then
              Wdone[w] = true
              local c = Wcost[w]
              if Wq[w] then
                Wused[w], Wseq[w] = Wused[w] + c, Wseq[w] + 1
              else
                local old = Wtot[w]
                local total = old + c
                local cw = cwidth(total)
                local ocw, s = Wcw[w], Ws[w]
                local body
                if old == 0 then
                  Wold[w] = Wb[w]
                  body = struct.pack(CF[cw], c)
                elseif cw == ocw then
                  local off, first, nn, pad = 10 + cw, Wfirst[w], Wn[w], Wpad[w]
                  if pad > 0 then
                    body = string.sub(s, off + (first - 1) * cw, off + nn * cw - 1)
                      .. string.rep('\0', (pad - 1) * cw) .. struct.pack(CF[cw], c)
                  else
                    body = string.sub(s, off + (first - 1) * cw, off + (nn - 1) * cw - 1)
                      .. struct.pack(CF[cw], struct.unpack(CF[cw], s, off + (nn - 1) * cw) + c)
                  end
                else
                  -- The total outgrew its width: widen every count.
                  local v = {}
                  for j = Wfirst[w], Wn[w] do
                    v[#v + 1] = struct.unpack(CF[ocw], s, 10 + ocw + (j - 1) * ocw)
                  end
                  for _ = 1, Wpad[w] do
                    v[#v + 1] = 0
                  end
                  v[#v] = v[#v] + c
                  body = struct.pack('<' .. string.rep('I' .. cw, #v), unpack(v))
                end
                Wtot[w] = total
                local k = Wk[w]
                vals[k] = struct.pack(HF[cw], Whead[w], cw, total) .. body
                ttls[k] = math.max(math.ceil(((Whead[w] + SPAN) * Wg[w] - t) / 1000) + rslack, 1)
              end
            end
          end
        end
      end

      -- Report the state after the charge.
      out[#out + 1] = struct.pack('<dd', t, allowed and 1 or 0)
      for i = 1, n do
        local w = Iw[i]
        local flags = 8 * Icand[i]
        if Iexc[i] then
          flags = flags + 1
        end
        if Ichg[i] then
          flags = flags + 2
        end
        if Wq[w] then
          if Wdone[w] or not Wend[w] then
            Wend[w] = true
            local k = Wk[w]
            vals[k] = struct.pack('<ddd', Wused[w], Wseq[w], Wg[w])
            ttls[k] = math.max(math.ceil((Wg[w] - t) / 1000), 0) + qslack
          end
          out[#out + 1] = struct.pack('<dBddd', Wused[w], flags, 0, Iretry[i], Wseq[w])
        else
          local reset, total = 0, Wtot[w]
          if total > 0 then
            reset = (Wold[w] + SPAN) * Wg[w]
          end
          out[#out + 1] = struct.pack('<dBddd', total, flags, reset, Iretry[i], Wb[w])
        end
      end
    end
  end

  -- Store what changed, once per counter.
  for k, ttl in pairs(ttls) do
    redis.call('SET', KEYS[k], vals[k], 'PX', ttl)
  end
  return table.concat(out)
end

-- Undo takes back charges of an earlier Decide, exactly: units still in
-- their bucket leave it, and a quota's used and seq go back, unless
-- another change came since: then seq grows, so that a seq names one
-- value. Arguments: number of counters (uint16), then per counter: kind
-- (byte: 1 rate, 2 quota), cost, and the charged bucket (rate) or the seq
-- after the charge (quota). KEYS: the counters. Reply: empty.
if op == 'U' then
  local n, pos = struct.unpack('<H', blob)
  for i = 1, n do
    local kind, c, x
    kind, c, x, pos = struct.unpack('<Bdd', blob, pos)
    local key = KEYS[i]
    local s = redis.call('GET', key)
    if s and kind == 1 then
      local cw = string.byte(s, 9)
      local head, _, total = struct.unpack('<dBI' .. cw, s)
      local nn = (#s - 9 - cw) / cw
      local base = head - nn + 1
      if x >= base and x <= head and x > head - SPAN then
        local v = { struct.unpack('<' .. string.rep('I' .. cw, nn), s, 10 + cw) }
        local j = x - base + 1
        local d = math.min(v[j], c)
        v[j] = v[j] - d
        total = total - d
        if total == 0 then
          redis.call('DEL', key)
        else
          local f = 1
          while v[f] == 0 do
            f = f + 1
          end
          cw = cwidth(total)
          local body = struct.pack('<' .. string.rep('I' .. cw, nn - f + 1), unpack(v, f, nn))
          redis.call('SET', key, struct.pack('<dBI' .. cw, head, cw, total) .. body, 'KEEPTTL')
        end
      end
    elseif s then
      local used, seq, e = struct.unpack('<ddd', s)
      if seq == x then
        seq = seq - 1
      else
        seq = seq + 1
      end
      redis.call('SET', key, struct.pack('<ddd', math.max(used - c, 0), seq, e), 'KEEPTTL')
    end
  end
  return ''
end

-- Seed sets quota counters that do not exist. Arguments: TTL (ms) until
-- a Decide sets the period end, then per counter: used, seq. KEYS: the
-- counters. Reply: empty.
if op == 'S' then
  local ttl, pos = struct.unpack('<d', blob)
  ttl = string.format('%d', ttl)
  for i = 1, #KEYS do
    local used, seq
    used, seq, pos = struct.unpack('<dd', blob, pos)
    redis.call('SET', KEYS[i], struct.pack('<ddd', used, seq, 0), 'NX', 'PX', ttl)
  end
  return ''
end

-- Refund gives cost back to quota counters whose period has not ended.
-- Arguments: now (< 0: Redis TIME), cost. KEYS: the counters, distinct.
-- Reply: per counter, used and seq after the refund, or -1 and -1 when
-- skipped.
if op == 'R' then
  local t, c = struct.unpack('<dd', blob)
  if t < 0 then
    local tm = redis.call('TIME')
    t = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
  end
  local out = {}
  for i = 1, #KEYS do
    local s = redis.call('GET', KEYS[i])
    local used, seq, e = -1, -1, 0
    if s then
      used, seq, e = struct.unpack('<ddd', s)
    end
    if s and (e == 0 or t < e) then
      used, seq = math.max(used - c, 0), seq + 1
      redis.call('SET', KEYS[i], struct.pack('<ddd', used, seq, e), 'KEEPTTL')
    else
      used, seq = -1, -1
    end
    out[i] = struct.pack('<dd', used, seq)
  end
  return table.concat(out)
end

-- Reset drops rate counters, and sets quota counters of the period
-- holding now, if they exist, to zero with seq one higher, once each.
-- Arguments: now (< 0: Redis TIME), number of limits (uint16), then per
-- limit: kind (byte: 1 rate, 2 quota), and for a quota the number of
-- candidate periods (byte) and the end of each, ascending. KEYS: per
-- limit its rate counter, or the counters of its candidate periods.
-- Reply: per limit, the seq after the reset (-1: not reset) and the
-- chosen candidate.
if op == 'X' then
  local t, n, pos = struct.unpack('<dH', blob)
  if t < 0 then
    local tm = redis.call('TIME')
    t = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
  end
  local out, seen, ki = {}, {}, 1
  for i = 1, n do
    local kind
    kind, pos = struct.unpack('<B', blob, pos)
    local seq, cand = -1, 0
    if kind == 1 then
      redis.call('DEL', KEYS[ki])
      ki = ki + 1
    else
      local nc, key
      nc, pos = struct.unpack('<B', blob, pos)
      for j = 1, nc do
        local en
        en, pos = struct.unpack('<d', blob, pos)
        if not key and (t < en or j == nc) then
          key, cand = KEYS[ki + j - 1], j - 1
        end
      end
      ki = ki + nc
      if not seen[key] then
        seen[key] = true
        local s = redis.call('GET', key)
        if s then
          local _, sq, e = struct.unpack('<ddd', s)
          seq = sq + 1
          redis.call('SET', key, struct.pack('<ddd', 0, seq, e), 'KEEPTTL')
        end
      end
    end
    out[i] = struct.pack('<dd', seq, cand)
  end
  return table.concat(out)
end

return redis.error_reply('redisstore: unknown operation ' .. tostring(op))
