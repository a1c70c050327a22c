#!/usr/bin/env bash
# Load test on loopback: gaia-proxy next to a bare httputil.ReverseProxy,
# both in front of the same minimal upstream, measured in the same run
# with wrk, alternating rounds so that machine noise hits both alike.
#
#   bench/load.sh                      # embedded default (in-process limiter)
#   DURATION=20s ROUNDS=5 bench/load.sh
#
# Prints requests/s and p99 of each, and their ratio. Requires wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
CONFIG=${CONFIG:-bench/gaia-bench.yaml}
UP=127.0.0.1:9101 BARE=127.0.0.1:9102 GAIA=127.0.0.1:9103 ADMIN=127.0.0.1:9104

command -v wrk >/dev/null || { echo "wrk not found (Debian: apt-get install -y wrk)" >&2; exit 1; }
out=bench/out
rm -rf "$out/data"
mkdir -p "$out"
go build -o "$out/gaia-proxy" ./cmd/gaia-proxy
go build -o "$out/benchserver" ./bench/benchserver

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

"$out/benchserver" upstream -listen "$UP" & pids+=($!)
"$out/benchserver" bare -listen "$BARE" -upstream "http://$UP" & pids+=($!)
"$out/gaia-proxy" serve --config "$CONFIG" --listen "$GAIA" --admin-listen "$ADMIN" \
  --upstream "http://$UP" --data-dir "$out/data" 2>"$out/gaia.log" & pids+=($!)

for addr in "$UP" "$BARE" "$GAIA"; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://$addr/bench" && break; sleep 0.1; done
done
curl -fs "http://$ADMIN/health" >/dev/null || { echo "gaia-proxy did not start:" >&2; cat "$out/gaia.log" >&2; exit 1; }

# run NAME ADDR: one wrk round; prints "rps p99_ms".
run() {
  local res rps p99 bad
  res=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s bench/users.lua "http://$2/bench")
  bad=$(awk '/Non-2xx or 3xx responses/ {print $NF}' <<<"$res")
  if [ -n "$bad" ]; then echo "$1: $bad responses were not 2xx: the benchmark config must admit everything" >&2; exit 1; fi
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$res")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$res")
  echo "$rps $p99"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "warming up..." >&2
DURATION=2s run bare "$BARE" >/dev/null
DURATION=2s run gaia "$GAIA" >/dev/null

bare_rps=() bare_p99=() gaia_rps=() gaia_p99=()
for i in $(seq "$ROUNDS"); do
  read -r r p < <(run bare "$BARE"); bare_rps+=("$r"); bare_p99+=("$p")
  read -r r p < <(run gaia "$GAIA"); gaia_rps+=("$r"); gaia_p99+=("$p")
  echo "round $i: bare ${bare_rps[-1]} req/s p99 ${bare_p99[-1]}ms | gaia-proxy ${gaia_rps[-1]} req/s p99 ${gaia_p99[-1]}ms" >&2
done

br=$(printf '%s\n' "${bare_rps[@]}" | median)
bp=$(printf '%s\n' "${bare_p99[@]}" | median)
gr=$(printf '%s\n' "${gaia_rps[@]}" | median)
gp=$(printf '%s\n' "${gaia_p99[@]}" | median)
echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds, medians, config $CONFIG"
printf '%-28s %12s %10s\n' "" "requests/s" "p99 ms"
printf '%-28s %12.0f %10.2f\n' "bare httputil.ReverseProxy" "$br" "$bp"
printf '%-28s %12.0f %10.2f\n' "gaia-proxy" "$gr" "$gp"
awk -v g="$gr" -v b="$br" -v gp="$gp" -v bp="$bp" 'BEGIN {printf "ratio gaia-proxy/bare: throughput %.3f, p99 %.2fx\n", g/b, gp/bp}'
