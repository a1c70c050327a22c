-- gaia-proxy limiter/redisstore: every operation on limiter state, in one
-- script so that one SCRIPT LOAD serves them all. ARGV[1] names the
-- operation, ARGV[2] carries its arguments packed little-endian (numbers
-- as doubles: integers are exact below 2^53), and the reply is packed the
-- same way. wire.go and decide.go write and read both sides.
--
-- Times are integer microseconds since the Unix epoch; TTLs and the stamp
-- of a window string are milliseconds.
--
-- In Redis's Lua (7.0, measured with callgrind), a VM instruction costs
-- about 50 machine instructions, moving a number to or from a packed
-- string about 250, making a string or a table over 1000 (with the
-- garbage collector's share), a redis.call about 6500. The layout and
-- the code below are shaped by that: a decision touches few numbers,
-- makes few strings and runs few instructions.
--
-- A window string holds the rate windows of one owner (a limit Key up to
-- its last "/"):
--
--   layout length (uint16), layout: per window its idg length (byte) and
--   idg (its id and bucket width g, packed), for the windows of the last
--   request that wrote the string; the number of other windows (uint16),
--   their layout length and layout, as before; stamp (double: when the
--   key's TTL ends, by the Redis clock, in ms); per window a header: head
--   (its newest bucket), rest (the units of older buckets), last (the
--   units of bucket head), x = oo + 64*(cw + 16*hb) (doubles); then per
--   window its history, hb bytes: pairs (bucket mod 256: byte, count: cw
--   bytes) of the buckets before head that hold units, ascending; the
--   oldest bucket holding units is head-oo.
--
-- cw (1, 2, 4 or 8 bytes: struct's integer sizes) holds the total, hence
-- every count. A decision whose windows are the string's, in the same
-- order (its layout: one string compare), reads every header with one
-- unpack, reads history pairs only
-- as they leave the window (each pair once), and writes the string with
-- one pack: counting in bucket head changes two numbers, moving to a
-- newer bucket also moves (head, last) into the history. Amortised O(1)
-- per window, whatever its length; the other windows' headers and
-- histories are copied as they are. Otherwise the string is first
-- rewritten in the request's layout: the request's windows (empty ones
-- for those it lacks), then the others whose units have not all left
-- their span.
--
-- A quota counter is a string: used, seq, and the period end (doubles;
-- end 0 until a Decide has seen the counter).
--
-- Writes keep the key's TTL (SET KEEPTTL) unless it must grow: a quota
-- counter gets its TTL once, when a Decide first sees it; a window string
-- when its stamp comes before the moment its newest bucket leaves its
-- span, plus a slack. It then gets a quarter of that time more, so that a
-- busy owner sets its TTL about four times per window.

local SPAN = 51 -- limiter.Buckets + 1, set by redisstore.go

local op = ARGV[1]
local sunpack, spack, ssub, srep = struct.unpack, struct.pack, string.sub, string.rep
local floor, ceil = math.floor, math.ceil
local concat = table.concat
local rcall = redis.call

-- PF[cw] packs and unpacks a history pair; PT[cw] is its format token.
-- struct takes integers of 1, 2, 4 or 8 bytes.
local PF = { '<BI1', '<BI2', nil, '<BI4', nil, nil, nil, '<BI8' }
local PT = { 'BI1', 'BI2', nil, 'BI4', nil, nil, nil, 'BI8' }

-- cwidth returns the bytes a count up to x needs: 1, 2, 4 or 8.
local function cwidth(x)
  if x < 256 then
    return 1
  elseif x < 65536 then
    return 2
  elseif x < 4294967296 then
    return 4
  end
  return 8
end

local clock -- Redis TIME, µs, read once per call
local function now()
  if not clock then
    local tm = rcall('TIME')
    clock = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
  end
  return clock
end

-- piece adds s[from..to], unless empty, to the pack arguments A of a
-- window string being planned (see plan): one more argument, a string
-- token in code and T. It returns the new na, code and nt.
local function piece(A, T, na, code, nt, s, from, to)
  if to >= from then
    na, code, nt = na + 1, code * 10 + 1, nt + 1
    T[nt] = 1
    A[na] = ssub(s, from, to)
  end
  return na, code, nt
end

-- readOwner returns the windows of window string s as tables: id (idg),
-- g, head, rest, last, cw, and the history as a list of {bucket, count};
-- and the stamp.
local function readOwner(s)
  local lay, _, xl, stamp, pos = sunpack('<Hc0HHc0d', s)
  local recs = {}
  for _, l in ipairs({ lay, xl }) do
    local p = 1
    while p <= #l do
      local id
      id, p = sunpack('<Bc0', l, p)
      recs[#recs + 1] = { id = id, g = sunpack('<d', id, #id - 7) }
    end
  end
  for _, rec in ipairs(recs) do
    local x
    rec.head, rec.rest, rec.last, x, pos = sunpack('<dddd', s, pos)
    rec.cw = (x % 1024 - x % 64) / 64
    rec.hn = (x - x % 1024) / 1024 / (1 + rec.cw)
  end
  for _, rec in ipairs(recs) do
    local h = {}
    for i = 1, rec.hn do
      local bk, c
      bk, c, pos = sunpack(PF[rec.cw], s, pos)
      h[i] = { rec.head - (rec.head - bk) % 256, c }
    end
    rec.hist = h
  end
  return recs, stamp
end

-- ownerString packs recs (as readOwner returns them, counts possibly
-- changed) into a window string whose layout holds the first n, the
-- others following. Pairs of count 0 are dropped.
local function ownerString(recs, stamp, n)
  local lay, heads, hists = {}, {}, {}
  for r, rec in ipairs(recs) do
    local h, pairs_ = {}, {}
    for _, p in ipairs(rec.hist) do
      if p[2] > 0 then
        h[#h + 1] = p
      end
    end
    local rest = 0
    for _, p in ipairs(h) do
      rest = rest + p[2]
    end
    local old = rec.head
    if #h > 0 then
      old = h[1][1]
    end
    local cw = math.max(rec.cw or 1, cwidth(rest + rec.last))
    lay[r] = spack('<Bc0', #rec.id, rec.id)
    heads[r] = spack('<dddd', rec.head, rest, rec.last, rec.head - old + 64 * (cw + 16 * #h * (1 + cw)))
    for i, p in ipairs(h) do
      pairs_[i] = spack(PF[cw], p[1] % 256, p[2])
    end
    hists[r] = concat(pairs_)
  end
  local l, x = concat(lay, '', 1, n), concat(lay, '', n + 1, #lay)
  return spack('<Hc0HHc0d', #l, l, #lay - n, #x, x, stamp) .. concat(heads) .. concat(hists)
end

-- writeOwner stores recs under key, keeping the TTL, or deletes key when
-- no window holds units.
local function writeOwner(key, recs, stamp)
  local live = {}
  for _, rec in ipairs(recs) do
    local units = rec.last
    for _, p in ipairs(rec.hist) do
      units = units + p[2]
    end
    if units > 0 then
      live[#live + 1] = rec
    end
  end
  if #live == 0 then
    rcall('DEL', key)
  else
    rcall('SET', key, ownerString(live, stamp, #live), 'KEEPTTL')
  end
end

-- Undo, Refund and Reset run once: KEYS ends with a marker key of the
-- call's own (in the slot of its counters). A second run, a client
-- sending the call again after losing its reply, finds the reply
-- stored there and returns it, changing nothing (redisstore's once).
-- done stores reply in the call's marker and returns it. It is made
-- only for those operations: a closure costs Redis over a thousand
-- instructions, which a Decide need not pay.
local MARKER_TTL = 30 -- seconds, set by redisstore.go
local done
if op == 'U' or op == 'R' or op == 'X' then
  local marker = KEYS[#KEYS]
  local prev = rcall('GET', marker)
  if prev then
    return prev
  end
  done = function(reply)
    rcall('SET', marker, reply, 'EX', MARKER_TTL)
    return reply
  end
end

-- Decide decides a batch of requests, one after the other, each as if
-- alone. ARGV[2] holds every number and string of the batch, ARGV[3] the
-- format that unpacks it in one call:
--   number of requests, of plans, rate and quota TTL slack (ms);
--   plans, the part of a request that its keys and time leave out,
--   which the requests of one policy share: number of owners, of quota
--   counters, of limits, and of windows, and the reply format of a
--   request; per owner, its number of windows, its layout, and the
--   formats that unpack its headers and pack its string; per window its
--   idg, bucket width, and whether it charges at most 1; per quota
--   counter whether it charges at most 1, its number of candidate
--   periods and their ends (three, ascending); per limit its counter
--   (windows in owner order, then quota counters, from 1), flags (1
--   shadow, 2 checks a cost of at most 1) and limit;
--   requests: plan, now (< 0: Redis TIME), cost, then the key (index
--   into KEYS) of each owner, and of each candidate of each quota.
-- KEYS: every key the batch names, once.
-- Reply, per request: now; per window, its total before the request and
-- oo + 64*(h - b), where h is the bucket it charges (its newest) and b
-- the bucket of now, and oo is h minus the oldest bucket holding units;
-- per quota counter, used (-1: missing) and seq before the request; then,
-- for each rate limit that refused (or would have), in order, when the
-- cost fits (-1: never). Nothing is decided when a counter is missing.
-- The caller derives the rest: the period chosen, which limits refused,
-- what was charged.
if op == 'D' then
  local V = { sunpack(ARGV[3], ARGV[2]) }
  local vals = rcall('MGET', unpack(KEYS))
  local px = {} -- key index: TTL to set (ms), or false to keep it
  local m, np, rslack, qslack = V[1], V[2], V[3], V[4]

  -- Where each plan starts in V.
  local P = { 0 } -- tables are made at a typical size: see O below
  local j = 5
  for p = 1, np do
    local no, nq, nl, nw = V[j], V[j + 1], V[j + 2], V[j + 3]
    P[p] = j
    j = j + 5 + 4 * no + 3 * nw + 5 * nq + 3 * nl
  end

  local R, nr, RF, nrf = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, 0, { '', '' }, 0
  -- Per owner of the request being decided, a table: its pack arguments
  -- (array part) and fields k (key), s (string), h (headers), na
  -- (arguments), code (history tokens, base 10: 1 a string, 1+cw a
  -- pair), leave (when its newest bucket leaves), he (where the
  -- histories of other requests' windows start).
  local O = { false, false }
  -- Per window: total before the request.
  local Wt = { 0, 0, 0, 0 }
  -- Per quota counter: key, end, used (false: missing), seq, whether it
  -- has its end, the first counter with its key.
  local Qk, Qe, Qu, Qs, Qh, Qsame = { 0, 0 }, { 0, 0 }, { 0, 0 }, { 0, 0 }, { 0, 0 }, { 0, 0 }
  local FC = {} -- pack formats, by owner and history tokens

  -- relayout rewrites window string s for a request whose n windows have
  -- their idg at V[w], V[w+3], ...: those, in that order (empty ones for
  -- those s lacks), then the others whose units have not all left their
  -- span at t.
  local function relayout(s, n, w, t)
    local recs, stamp = readOwner(s)
    local out = {}
    for i = 1, n do
      local id = V[w + 3 * i - 3]
      out[i] = { id = id, head = 0, rest = 0, last = 0, cw = 1, hist = {} }
      for _, rec in ipairs(recs) do
        if rec.id == id then
          out[i], rec.taken = rec, true
        end
      end
    end
    for _, rec in ipairs(recs) do
      if not rec.taken and (rec.head + SPAN) * rec.g > t then
        out[#out + 1] = rec
      end
    end
    return ownerString(out, stamp, n)
  end

  -- plan reads windows y0+1 .. y0+n, whose specs start at V[wb], from
  -- their string s and its headers H (see the reading below) as they are
  -- at t, and fills A with what packs the
  -- string after charging window y the cost C[y] (false: not charged;
  -- without C: the cost its first limit checks of cost). With report, it
  -- reports each window's total before the request (in Wt and R). It
  -- returns the number of pack arguments, the history tokens, when the
  -- newest bucket leaves, and where the histories of other windows
  -- start.
  local function plan(y0, n, wb, s, H, A, t, cost, C, report)
    local na, code, leave, nt = 6 + 4 * n, 0, 0, 0
    local T = A.T -- the history tokens; code holds them too, exactly up to 15
    local from, to = 0, -1 -- pending run of s to copy
    local hp = H and H[4 * n + 4] + 32 * H[1]
    local hi, ws = 0, wb + 3 * y0
    for y = y0 + 1, y0 + n do
      hi, ws = hi + 4, ws + 3
      local g, c = V[ws - 2], cost
      if C then
        c = C[y]
        if c == nil then
          c = cost
        end
      end
      if c and c > 1 and V[ws - 1] == 1 then
        c = 1
      end
      local q = t / g
      local b = q - q % 1 -- floor(t/g): exact for 0 <= t < 2^53 - g
      local head, rest, last, x, total, cb, old, a, e
      if H then
        head, rest, last, x = H[hi], H[hi + 1], H[hi + 2], H[hi + 3]
        a, e = hp, hp + (x - x % 1024) / 1024 - 1
        hp = e + 1
        total, cb, old = rest + last, head, head - x % 64
        if b > head then
          cb = b
          if b - head >= SPAN then
            total = 0
          elseif old <= b - SPAN and c then
            -- Pairs of buckets below the span leave.
            local cw = (x % 1024 - x % 64) / 64
            local pf, lo = PF[cw], b - SPAN + 1
            old = head
            while a <= e do
              local bk, u = sunpack(pf, s, a)
              bk = head - (head - bk) % 256
              if bk >= lo then
                old = bk
                break
              end
              total, rest, a = total - u, rest - u, a + 1 + cw
            end
          end
        end
      else
        head, rest, last, x, total, cb, old, a, e = b, 0, 0, 64, 0, b, b, 0, -1
      end
      if report then
        Wt[y] = total
        local r = nr + 2
        if total > 0 then
          R[r - 1], R[r] = total, cb - old + 64 * (cb - b)
        else
          R[r - 1], R[r] = 0, 64 * (cb - b)
        end
        nr = r
      end
      if not c then
        -- As it was.
      elseif total == 0 then
        head, rest, last, x, e = b, 0, c, 64 * cwidth(c), a - 1
      elseif cb == head and total + c < 256 then
        last = last + c -- counting in the newest bucket: the usual case
      else
        local cw = (x % 1024 - x % 64) / 64
        local ncw, hlen = cw, e - a + 1
        if total + c >= 256 then
          ncw = cwidth(total + c)
          if ncw < cw then
            ncw = cw
          end
        end
        if ncw > cw then
          -- The total outgrew the count width: widen every count.
          na, code, nt = piece(A, T, na, code, nt, s, from, to)
          local v, pf = {}, PF[cw]
          for z = a, e, 1 + cw do
            local bk, u = sunpack(pf, s, z)
            v[#v + 1] = spack(PF[ncw], bk, u)
          end
          na, code, nt = na + 1, code * 10 + 1, nt + 1
          T[nt] = 1
          A[na] = concat(v)
          from, to, a, e, hlen = 0, -1, 0, -1, #v * (1 + ncw)
        end
        if cb == head then
          last = last + c
        else
          if last > 0 then
            -- The old newest bucket joins the history.
            if e >= a then
              if to == a - 1 then
                to = e
              else
                na, code, nt = piece(A, T, na, code, nt, s, from, to)
                from, to = a, e
              end
            end
            na, code, nt = piece(A, T, na, code, nt, s, from, to)
            A[na + 1], A[na + 2] = head % 256, last
            na, code, hlen, nt = na + 2, code * 10 + 1 + ncw, hlen + 1 + ncw, nt + 1
            T[nt] = 1 + ncw
            from, to, a, e = 0, -1, 0, -1
          end
          head, rest, last = cb, total, c
        end
        x = head - old + 64 * (ncw + 16 * hlen)
      end
      if e >= a then
        if to == a - 1 then
          to = e
        else
          na, code, nt = piece(A, T, na, code, nt, s, from, to)
          from, to = a, e
        end
      end
      A[hi + 3], A[hi + 4], A[hi + 5], A[hi + 6] = head, rest, last, x
      local lv = (head + SPAN) * g
      if lv > leave then
        leave = lv
      end
    end
    na, code, nt = piece(A, T, na, code, nt, s, from, to)
    return na, code, leave, hp, nt
  end

  -- retryAt returns when cost c fits limit lim of window y, which holds
  -- used units at t: when enough units have left, walking from the
  -- oldest bucket; -1 when c never fits.
  local function retryAt(y, c, lim, used, t, ob, wb)
    if c > lim then
      return -1
    end
    local o, i = 1, y
    while i > V[ob + 4 * o - 4] do
      i, o = i - V[ob + 4 * o - 4], o + 1
    end
    local A = O[o]
    local H, s, n, g = A.h, A.s, V[ob + 4 * o - 4], V[wb + 3 * y - 2]
    local p = H[4 * n + 4] + 32 * H[1]
    for z = 1, i - 1 do
      local x = H[4 * z + 3]
      p = p + (x - x % 1024) / 1024
    end
    local head, x = H[4 * i], H[4 * i + 3]
    local cw = (x % 1024 - x % 64) / 64
    local hn = (x - x % 1024) / 1024 / (1 + cw)
    local q = t / g
    local lo = q - q % 1 - SPAN + 1
    local need, freed = used + c - lim, 0
    for _ = 1, hn do
      local bk, n = sunpack(PF[cw], s, p)
      bk = head - (head - bk) % 256
      p = p + 1 + cw
      if bk >= lo then
        freed = freed + n
        if freed >= need then
          return (bk + SPAN) * g
        end
      end
    end
    return (head + SPAN) * g
  end

  for _ = 1, m do
    local pl = V[j]
    local p0, t, cost = P[pl], V[j + 1], V[j + 2]
    j = j + 3
    if t < 0 then
      t = now()
    end
    local no, nq, nl, nw = V[p0], V[p0 + 1], V[p0 + 2], V[p0 + 3]
    local ob = p0 + 5 -- owner o: V[ob+4o-4 ..]: windows, layout, formats
    local wb = ob + 4 * no -- window y: V[wb+3y-3 ..]: idg, g, one
    local qb = wb + 3 * nw -- quota q: V[qb+5q-5 ..]: one, nc, ends
    local lb = qb + 5 * nq -- limit i: V[lb+3i-3 ..]: counter, flags, limit
    R[nr + 1] = t
    nr, nrf = nr + 1, nrf + 1
    RF[nrf] = V[p0 + 4]

    -- Windows, owner by owner: read them at now, and plan their string
    -- as if every window were charged.
    local y = 0
    for o = 1, no do
      local k, os = V[j], ob + 4 * o - 4
      j = j + 1
      local n, lay = V[os], V[os + 1]
      local s, H = vals[k], false
      if s then
        if sunpack('<Hc0', s) ~= lay then
          s = relayout(s, n, wb + 3 * y, t)
        end
        -- The number of other windows, their layout, the stamp, the
        -- headers of the request's windows, and where they end.
        H = { sunpack(V[os + 2], s, #lay + 3) }
      end
      local A = O[o]
      if not A then
        -- Made at its size (three windows' pack arguments, and the
        -- fields): a table grown key by key is rehashed at every power
        -- of two. With the other tables of a call made at a typical
        -- size too, a lone decision costs Redis 8% fewer instructions
        -- (226,000 -> 208,000; 2% at 30 a call).
        A = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
          k = false, s = false, h = false, na = 0, code = 0, leave = 0, he = 0, nt = 0,
          T = { 0, 0, 0, 0, 0, 0, 0, 0 } }
        O[o] = A
      end
      A.k, A.s, A.h = k, s, H
      A.na, A.code, A.leave, A.he, A.nt = plan(y, n, wb, s, H, A, t, cost, nil, true)
      y = y + n
    end

    -- Quota counters: pick the period holding now.
    local missing = false
    for q = 1, nq do
      local qs = qb + 5 * q - 5
      local nc = V[qs + 1]
      local cand = nc - 1
      for c = 0, nc - 2 do
        if t < V[qs + 2 + c] then
          cand = c
          break
        end
      end
      local k = V[j + cand]
      j = j + nc
      Qk[q], Qe[q], Qsame[q] = k, V[qs + 2 + cand], q
      for z = 1, q - 1 do
        if Qk[z] == k then
          Qsame[q] = z -- another limit's period chose the same counter
          break
        end
      end
      local s = vals[k]
      if s then
        local used, seq, e = sunpack('<ddd', s)
        Qu[q], Qs[q], Qh[q] = used, seq, e ~= 0
        R[nr + 1], R[nr + 2] = used, seq
      else
        Qu[q] = false
        R[nr + 1], R[nr + 2] = -1, 0
        missing = true
      end
      nr = nr + 2
    end

    -- Check every limit against its usage before this request.
    local allowed, shadowOK = true, true
    if not missing then
      local nx = 0
      for i = 1, nl do
        local ls = lb + 3 * i - 3
        local y, fl, lim = V[ls], V[ls + 1], V[ls + 2]
        local c, used = cost, nil
        if fl >= 2 and c > 1 then
          c = 1
        end
        if y > nw then
          used = Qu[Qsame[y - nw]]
        else
          used = Wt[y]
        end
        if c > lim - used then
          if fl % 2 == 1 then
            shadowOK = false
          else
            allowed = false
          end
          if y <= nw then
            nx = nx + 1
            R[nr + nx] = retryAt(y, c, lim, used, t, ob, wb)
          end
        end
      end
      if nx > 0 then
        nr, nrf = nr + nx, nrf + 1
        RF[nrf] = srep('d', nx)
      end
    end

    if allowed and cost > 0 and not missing then
      -- Which counters to charge: all, unless a shadow limit refused;
      -- then those of the limits that passed or are enforced.
      local C, QC = false, false
      if not shadowOK then
        C, QC = {}, {}
        for z = 1, nw do
          C[z] = false
        end
        for i = 1, nl do
          local ls = lb + 3 * i - 3
          if V[ls + 1] % 2 == 0 then
            local z = V[ls]
            if z > nw then
              QC[Qsame[z - nw]] = true
            else
              C[z] = nil
            end
          end
        end
      end

      -- Write each owner with a charged window, in one pack.
      y = 0
      for o = 1, no do
        local os = ob + 4 * o - 4
        local n, lay = V[os], V[os + 1]
        local all, any = true, true
        if C then
          any = false
          for z = y + 1, y + n do
            if C[z] == nil then
              any = true
            else
              all = false
            end
          end
        end
        if any then
          local A = O[o]
          local s, H, k = A.s, A.h, A.k
          local na, code, leave, hend, nt = A.na, A.code, A.leave, A.he, A.nt
          if not all then
            na, code, leave, hend, nt = plan(y, n, wb, s, H, A, t, cost, C, false)
          end
          local xn, xl = 0, ''
          if H then
            xn, xl = H[1], H[2]
          end
          A[1], A[2], A[3], A[4], A[5] = #lay, lay, xn, #xl, xl
          if xn > 0 then
            -- Windows of other requests follow, as they were.
            local hh, p = H[4 * n + 4], 1
            table.insert(A, 7 + 4 * n, ssub(s, hh, hh + 32 * xn - 1))
            na = na + 2
            A[na] = ssub(s, hend)
            code, nt = code * 10 + 1, nt + 1
            A.T[nt] = 1
            for z = 1, xn do
              local id, head
              id, p = sunpack('<Bc0', xl, p)
              head = sunpack('<d', s, hh + 32 * z - 32)
              if (head + SPAN) * sunpack('<d', id, #id - 7) > leave then
                leave = (head + SPAN) * sunpack('<d', id, #id - 7)
              end
            end
          end
          -- The TTL must last until the newest bucket leaves; give it a
          -- quarter more when it must grow.
          local real = floor(now() / 1000)
          local stamp = H and H[3] or 0
          local need = real + ceil((leave - t) / 1000) + rslack
          if need > stamp then
            stamp = need + ceil((leave - t) / 4000)
            px[k] = stamp - real
          elseif px[k] == nil then
            px[k] = false
          end
          A[6] = stamp
          local key = nt <= 8 and code + 1e8 * ((o * 256 + pl) * 2 + (xn > 0 and 1 or 0))
          local f = key and FC[key]
          if not f then
            local toks, T = { '', '', '', '', '', '', '', '' }, A.T
            for z = 1, nt do
              toks[z] = T[z] == 1 and 'c0' or PT[T[z] - 1]
            end
            f = V[os + 3] .. (xn > 0 and 'c0' or '') .. concat(toks, '', 1, nt)
            if key then
              FC[key] = f
            end
          end
          vals[k] = spack(f, unpack(A, 1, na))
        end
        y = y + n
      end

      -- Charge each quota counter once, the cost of the first limit
      -- naming it.
      for q = 1, nq do
        if Qsame[q] == q and (not QC or QC[q]) then
          local k = Qk[q]
          Qu[q], Qs[q] = Qu[q] + ((V[qb + 5 * q - 5] == 1 and cost > 1) and 1 or cost), Qs[q] + 1
          vals[k] = spack('<ddd', Qu[q], Qs[q], Qe[q])
          if px[k] == nil then
            px[k] = false
          end
        end
      end
    end

    -- A quota counter seen for the first time gets its period end.
    if not missing then
      for q = 1, nq do
        if Qsame[q] == q and not Qh[q] then
          local k = Qk[q]
          vals[k] = spack('<ddd', Qu[q], Qs[q], Qe[q])
          px[k] = math.max(ceil((Qe[q] - t) / 1000), 0) + qslack
        end
      end
    end
  end

  -- Store what changed, once per key.
  for k, ttl in pairs(px) do
    if ttl then
      rcall('SET', KEYS[k], vals[k], 'PX', ttl)
    else
      rcall('SET', KEYS[k], vals[k], 'KEEPTTL')
    end
  end
  return spack('<' .. concat(RF, '', 1, nrf), unpack(R, 1, nr))
end

-- Undo takes back charges of an earlier Decide, exactly: units still in
-- their bucket leave it, and a quota's used and seq go back, unless
-- another change came since: then seq grows, so that a seq names one
-- value. Arguments: number of counters (uint16), then per counter: kind
-- (byte: 1 rate, 2 quota), cost, the charged bucket (rate) or the seq
-- after the charge (quota), and for a window its idg length (byte) and
-- idg. KEYS: the counters (a window's string), then the marker. Reply:
-- empty.
if op == 'U' then
  local blob = ARGV[2]
  local n, pos = sunpack('<H', blob)
  for i = 1, n do
    local kind, c, x
    kind, c, x, pos = sunpack('<Bdd', blob, pos)
    local key = KEYS[i]
    local s = rcall('GET', key)
    if kind == 1 then
      local id
      id, pos = sunpack('<Bc0', blob, pos)
      if s then
        local recs, stamp = readOwner(s)
        for _, rec in ipairs(recs) do
          if rec.id == id then
            if x == rec.head then
              rec.last = rec.last - math.min(rec.last, c)
            else
              for _, p in ipairs(rec.hist) do
                if p[1] == x then
                  p[2] = p[2] - math.min(p[2], c)
                end
              end
            end
          end
        end
        writeOwner(key, recs, stamp)
      end
    elseif s then
      local used, seq, e = sunpack('<ddd', s)
      if seq == x then
        seq = seq - 1
      else
        seq = seq + 1
      end
      rcall('SET', key, spack('<ddd', math.max(used - c, 0), seq, e), 'KEEPTTL')
    end
  end
  return done('')
end

-- Seed sets quota counters that do not exist. Arguments: TTL (ms) until
-- a Decide sets the period end, then per counter: used, seq. KEYS: the
-- counters. Reply: empty.
if op == 'S' then
  local blob = ARGV[2]
  local ttl, pos = sunpack('<d', blob)
  ttl = string.format('%d', ttl)
  for i = 1, #KEYS do
    local used, seq
    used, seq, pos = sunpack('<dd', blob, pos)
    rcall('SET', KEYS[i], spack('<ddd', used, seq, 0), 'NX', 'PX', ttl)
  end
  return ''
end

-- Raise brings quota counters that are behind the ledger up to it: one
-- whose seq is below the ledger's, or equal with other usage, takes the
-- larger usage of the two and a seq one above both; the others, and
-- counters that do not exist, are left alone. It never lowers usage, so
-- running it twice, or with a ledger value older than the counter, does
-- no harm. Arguments: per counter, the ledger's used and seq. KEYS: the
-- counters. Reply: per counter, used and seq after, or -1 and -1 when
-- left alone.
if op == 'L' then
  local blob, pos = ARGV[2], 1
  local out = {}
  for i = 1, #KEYS do
    local lu, ls
    lu, ls, pos = sunpack('<dd', blob, pos)
    local s = rcall('GET', KEYS[i])
    local used, seq = -1, -1
    if s then
      local u, q, e = sunpack('<ddd', s)
      if q < ls or (q == ls and u ~= lu) then
        used, seq = math.max(u, lu), math.max(q, ls) + 1
        rcall('SET', KEYS[i], spack('<ddd', used, seq, e), 'KEEPTTL')
      end
    end
    out[i] = spack('<dd', used, seq)
  end
  return concat(out)
end

-- Refund gives cost back to quota counters whose period has not ended.
-- Arguments: now (< 0: Redis TIME), cost. KEYS: the counters, distinct,
-- then the marker.
-- Reply: per counter, used and seq after the refund, or -1 and -1 when
-- skipped.
if op == 'R' then
  local t, c = sunpack('<dd', ARGV[2])
  if t < 0 then
    t = now()
  end
  local out = {}
  for i = 1, #KEYS - 1 do
    local s = rcall('GET', KEYS[i])
    local used, seq, e = -1, -1, 0
    if s then
      used, seq, e = sunpack('<ddd', s)
    end
    if s and (e == 0 or t < e) then
      used, seq = math.max(used - c, 0), seq + 1
      rcall('SET', KEYS[i], spack('<ddd', used, seq, e), 'KEEPTTL')
    else
      used, seq = -1, -1
    end
    out[i] = spack('<dd', used, seq)
  end
  return done(concat(out))
end

-- Reset drops rate windows, and sets quota counters of the period
-- holding now, if they exist, to zero with seq one higher, once each.
-- Arguments: now (< 0: Redis TIME), number of limits (uint16), then per
-- limit: kind (byte: 1 rate, 2 quota), and for a window its idg length
-- (byte) and idg, for a quota the number of candidate periods (byte) and
-- the end of each, ascending. KEYS: per limit its window's string, or the
-- counters of its candidate periods; then the marker. Reply: per limit, the seq after the
-- reset (-1: not reset) and the chosen candidate.
if op == 'X' then
  local blob = ARGV[2]
  local t, n, pos = sunpack('<dH', blob)
  if t < 0 then
    t = now()
  end
  local out, seen, ki = {}, {}, 1
  for i = 1, n do
    local kind
    kind, pos = sunpack('<B', blob, pos)
    local seq, cand = -1, 0
    if kind == 1 then
      local id
      id, pos = sunpack('<Bc0', blob, pos)
      local key = KEYS[ki]
      ki = ki + 1
      local s = rcall('GET', key)
      if s then
        local recs, stamp = readOwner(s)
        for _, rec in ipairs(recs) do
          if rec.id == id then
            rec.last, rec.hist = 0, {}
          end
        end
        writeOwner(key, recs, stamp)
      end
    else
      local nc, key
      nc, pos = sunpack('<B', blob, pos)
      for j = 1, nc do
        local en
        en, pos = sunpack('<d', blob, pos)
        if not key and (t < en or j == nc) then
          key, cand = KEYS[ki + j - 1], j - 1
        end
      end
      ki = ki + nc
      if not seen[key] then
        seen[key] = true
        local s = rcall('GET', key)
        if s then
          local _, sq, e = sunpack('<ddd', s)
          seq = sq + 1
          rcall('SET', key, spack('<ddd', 0, seq, e), 'KEEPTTL')
        end
      end
    end
    out[i] = spack('<dd', seq, cand)
  end
  return done(concat(out))
end

return redis.error_reply('redisstore: unknown operation ' .. tostring(op))
