#!/usr/bin/env bash
# Load test on loopback: gaia-proxy next to a bare httputil.ReverseProxy
# (and, on Redis, next to a proxy doing one redis_rate check per request),
# all in front of the same minimal upstream, measured in the same run with
# wrk, in alternating rounds so that machine noise hits all alike.
#
#   bench/load.sh                          # embedded default (in-process limiter)
#   BACKEND=redis bench/load.sh            # gaia-proxy on Redis (a redis-server of its own)
#   BACKEND=redis PIN=1 bench/load.sh      # proxies + Redis on CPU 0, wrk + upstream on CPU 1
#   DATABASE_URL=postgres://... BACKEND=redis bench/load.sh   # + PostgreSQL ledger, reports its lag
#   BACKEND=redis REDIS_SOCKET=1 bench/load.sh   # both Redis clients on a unix socket
#   DURATION=20s ROUNDS=5 CONNS=64 bench/load.sh
#
# Prints, per proxy: requests/s, p99, CPU time per request (the proxy's,
# plus its Redis's), the ratios to the bare proxy, and with HALF=1 the p99
# at half the bare proxy's saturating rate (constant-rate load from
# `benchserver pace`, latency counted from when each request was due), for
# every proxy in the same alternating rounds, as medians, with the share
# of one CPU each proxy (with its Redis) used meanwhile: the headroom
# that decides the tail.
# Requires wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${BACKEND:-embedded}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
PIN=${PIN:-0}
HALF=${HALF:-0}
CONFIG=${CONFIG:-bench/gaia-bench.yaml}
UP=127.0.0.1:9101 BARE=127.0.0.1:9102 GAIA=127.0.0.1:9103 ADMIN=127.0.0.1:9104 RR=127.0.0.1:9105 REDIS_PORT=9106

command -v wrk >/dev/null || { echo "wrk not found (Debian: apt-get install -y wrk)" >&2; exit 1; }
out=bench/out
rm -rf "$out/data"
mkdir -p "$out"
go build -o "$out/gaia-proxy" ./cmd/gaia-proxy
go build -o "$out/benchserver" ./bench/benchserver

# Placement: with PIN=1 the proxies and Redis share CPU 0, the load
# generator and the upstream CPU 1, which isolates the proxy's own cost.
proxy_cpu=() load_cpu=()
if [ "$PIN" = 1 ]; then proxy_cpu=(taskset -c 0) load_cpu=(taskset -c 1); fi

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

"${load_cpu[@]}" "$out/benchserver" upstream -listen "$UP" & pids+=($!)
"${proxy_cpu[@]}" "$out/benchserver" bare -listen "$BARE" -upstream "http://$UP" & bare_pid=$!; pids+=($bare_pid)

targets=(bare gaia)
redis_pid=""
env=(GAIA_DATABASE_URL="${DATABASE_URL:-}")
if [ "$BACKEND" = redis ]; then
  redis_url="redis://127.0.0.1:$REDIS_PORT/0" socket=()
  if [ "${REDIS_SOCKET:-0}" = 1 ]; then
    socket=(--unixsocket "$PWD/$out/redis.sock" --unixsocketperm 700)
    redis_url="unix://$PWD/$out/redis.sock?db=0"
  fi
  "${proxy_cpu[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 "${socket[@]}" --save "" --appendonly no --logfile "$out/redis.log" & redis_pid=$!; pids+=($redis_pid)
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  env+=(GAIA_REDIS_URL="$redis_url")
  "${proxy_cpu[@]}" "$out/benchserver" redisrate -listen "$RR" -upstream "http://$UP" -redis "$redis_url" & rr_pid=$!; pids+=($rr_pid)
  targets+=(redisrate)
fi
migrate=()
if [ -n "${DATABASE_URL:-}" ]; then migrate=(--migrate); fi
env "${env[@]}" "${proxy_cpu[@]}" "$out/gaia-proxy" serve --config "$CONFIG" --listen "$GAIA" --admin-listen "$ADMIN" \
  --upstream "http://$UP" --data-dir "$out/data" "${migrate[@]}" 2>"$out/gaia.log" & gaia_pid=$!; pids+=($gaia_pid)

addr_of() { case $1 in bare) echo "$BARE";; gaia) echo "$GAIA";; redisrate) echo "$RR";; esac; }
# pids_of NAME: the processes whose CPU counts for NAME.
pids_of() { case $1 in bare) echo "$bare_pid";; gaia) echo "$gaia_pid $redis_pid";; redisrate) echo "$rr_pid $redis_pid";; esac; }
# cpu_ticks PIDS: user+system clock ticks used so far.
cpu_ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)

for t in "${targets[@]}"; do
  a=$(addr_of "$t")
  for _ in $(seq 100); do curl -fs -o /dev/null -H 'X-User-ID: u1' "http://$a/bench" && break; sleep 0.1; done
done
curl -fs "http://$ADMIN/health" >/dev/null || { echo "gaia-proxy did not start:" >&2; cat "$out/gaia.log" >&2; exit 1; }
echo "gaia-proxy: $(curl -fs "http://$ADMIN/health")" >&2

lagmax="$out/lagmax"
echo 0 >"$lagmax"
# sample_lag: the highest ledger lag /metrics shows while a round runs.
sample_lag() {
  while :; do
    curl -fs "http://$ADMIN/metrics" | awk -v f="$lagmax" '/^gaia_ledger_lag_seconds\{ledger="usage"\}/ {getline m < f; close(f); if ($2 > m) {print $2 > f; close(f)}}'
    sleep 0.25
  done
}

# run NAME: one wrk round; prints "rps p99_ms cpu_us_per_request".
run() {
  local a res rps p99 bad reqs c0 c1
  a=$(addr_of "$1")
  c0=$(cpu_ticks "$(pids_of "$1")")
  res=$("${load_cpu[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s bench/users.lua "http://$a/bench")
  c1=$(cpu_ticks "$(pids_of "$1")")
  bad=$(awk '/Non-2xx or 3xx responses/ {print $NF}' <<<"$res")
  if [ -n "$bad" ]; then echo "$1: $bad responses were not 2xx: the benchmark config must admit everything" >&2; exit 1; fi
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$res")
  reqs=$(awk '/requests in/ {print $1}' <<<"$res")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$res")
  echo "$rps $p99 $(awk -v c=$((c1 - c0)) -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", c / hz * 1e6 / n}')"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Warm up long enough for every one of the 10,000 users to have been seen
# (their first request of the day loads their quota from the ledger).
echo "warming up..." >&2
for t in "${targets[@]}"; do DURATION=${WARMUP:-10s} run "$t" >/dev/null; done

declare -A rps p99 cpu
for i in $(seq "$ROUNDS"); do
  line="round $i:"
  for t in "${targets[@]}"; do
    if [ "$t" = gaia ] && [ -n "${DATABASE_URL:-}" ]; then sample_lag & sampler=$!; fi
    read -r r p c < <(run "$t")
    if [ "$t" = gaia ] && [ -n "${DATABASE_URL:-}" ]; then kill "$sampler"; wait "$sampler" 2>/dev/null || true; fi
    rps[$t]+="$r " p99[$t]+="$p " cpu[$t]+="$c "
    line+=" $t $r req/s p99 ${p}ms ${c}us/req |"
  done
  echo "$line" >&2
done

med() { tr ' ' '\n' <<<"$1" | grep . | median; }
echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds, medians; backend $BACKEND${REDIS_SOCKET:+ (unix socket: $REDIS_SOCKET)}, pinned $PIN, config $CONFIG"
printf '%-28s %12s %10s %14s %10s %10s\n' "" "requests/s" "p99 ms" "CPU us/req" "x rps" "x CPU"
br=$(med "${rps[bare]}") bc=$(med "${cpu[bare]}")
for t in "${targets[@]}"; do
  name=$t
  [ "$t" = bare ] && name="bare httputil.ReverseProxy"
  [ "$t" = gaia ] && name="gaia-proxy ($BACKEND)"
  [ "$t" = redisrate ] && name="redis_rate per request"
  r=$(med "${rps[$t]}") p=$(med "${p99[$t]}") c=$(med "${cpu[$t]}")
  printf '%-28s %12.0f %10.2f %14.1f %10.3f %10.2f\n' "$name" "$r" "$p" "$c" "$(awk -v a="$r" -v b="$br" 'BEGIN {print a/b}')" "$(awk -v a="$c" -v b="$bc" 'BEGIN {print a/b}')"
done
if [ "$BACKEND" = redis ]; then
  awk -v g="$(med "${rps[gaia]}")" -v r="$(med "${rps[redisrate]}")" 'BEGIN {printf "gaia-proxy / redis_rate proxy throughput: %.2f\n", g/r}'
fi
if [ -n "${DATABASE_URL:-}" ]; then
  echo "ledger: highest lag during the gaia-proxy rounds $(cat "$lagmax")s (flush_interval $(awk '/flush_interval/ {print $2}' "$CONFIG" | head -1))"
fi

if [ "$HALF" = 1 ]; then
  half=$(awk -v b="$br" 'BEGIN {printf "%d", b/2}')
  echo
  echo "p99 at half the bare proxy's saturating rate ($half req/s, constant rate, ${HALF_DURATION:-10s}, $CONNS connections, 1,000 users, $ROUNDS rounds, medians):"
  declare -A hp hb
  for i in $(seq "$ROUNDS"); do
    line="round $i:"
    for t in "${targets[@]}"; do
      c0=$(cpu_ticks "$(pids_of "$t")") w0=$(date +%s%N)
      q=$("${load_cpu[@]}" "$out/benchserver" pace -target "http://$(addr_of "$t")/bench" -rate "$half" -duration "${HALF_DURATION:-10s}" -conns "$CONNS" |
        awk '$1 == "p99_ms" {print $2}')
      c1=$(cpu_ticks "$(pids_of "$t")") w1=$(date +%s%N)
      # busy: the share of one CPU the proxy (and its Redis) used.
      busy=$(awk -v c=$((c1 - c0)) -v hz="$hz" -v w=$((w1 - w0)) 'BEGIN {printf "%.0f", 100 * c / hz / (w / 1e9)}')
      hp[$t]+="$q " hb[$t]+="$busy "
      line+=" $t p99 ${q}ms CPU ${busy}% |"
    done
    echo "$line" >&2
  done
  for t in "${targets[@]}"; do
    printf '  %-10s p99 %.3f ms, CPU %s%% of one core\n' "$t" "$(med "${hp[$t]}")" "$(med "${hb[$t]}")"
  done
  b=$(med "${hp[bare]}")
  awk -v g="$(med "${hp[gaia]}")" -v b="$b" 'BEGIN {printf "  added by gaia-proxy: %.3f ms\n", g - b}'
  if [ "$BACKEND" = redis ]; then
    awk -v r="$(med "${hp[redisrate]}")" -v b="$b" 'BEGIN {printf "  added by the redis_rate proxy: %.3f ms\n", r - b}'
  fi
fi
