#!/usr/bin/env bash
# Redis's own work per decision, in machine instructions, for the Redis
# store next to go-redis/redis_rate: a repeatable figure where CPU time on
# a shared machine is not (instructions do not depend on what else runs).
#
#   bench/redis-instructions.sh              # 16 callers
#   CALLERS=64 bench/redis-instructions.sh
#
# For each benchmark (BenchmarkDecide: 3 rate windows and a quota per
# decision; BenchmarkDecideOne: one rate window, like for like with
# BenchmarkRedisRate: one limit) it runs a redis-server under
# valgrind's callgrind twice, for N1 and N2 decisions, and divides the
# difference in instructions by N2-N1, so that start-up, seeding and
# warm-up cancel out. It counts user-space instructions of redis-server
# (reading requests, running commands and scripts, writing replies);
# the kernel's share of the socket work is not in it. Under callgrind
# Redis runs some 50 times slower, so batches are fuller than at full
# speed: the script's per-call costs are shared by more decisions.
# Requires valgrind (Debian: apt-get install -y valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."

CALLERS=${CALLERS:-16}
N1=${N1:-2000}
N2=${N2:-7000}
PORT=${PORT:-9107}
out=bench/out
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "valgrind not found (Debian: apt-get install -y valgrind)" >&2; exit 1; }
go test -c -o "$out/redisstore.test" ./limiter/redisstore

vg=""
cleanup() { [ -n "$vg" ] && kill "$vg" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

# instructions BENCH N: redis-server's instructions over one run of BENCH
# at N decisions, then its number of script calls.
instructions() {
  local f="$out/callgrind.$1.$2"
  rm -f "$f"*
  valgrind --tool=callgrind --callgrind-out-file="$f" redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no >"$out/valgrind.log" 2>&1 &
  vg=$!
  for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done
  GAIA_TEST_REDIS_URL="redis://127.0.0.1:$PORT/0" "$out/redisstore.test" -test.run '^$' \
    -test.bench "^Benchmark$1\$/^callers=$CALLERS\$" -test.benchtime "${2}x" -test.count 1 >/dev/null
  local calls
  calls=$(redis-cli -p "$PORT" info commandstats | tr -d '\r' | awk -F'[:,=]' '$1 == "cmdstat_evalsha" {print $3}')
  redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
  wait "$vg" 2>/dev/null || true
  vg=""
  echo "$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}') $calls"
}

declare -A per calls
for b in Decide DecideOne RedisRate; do
  read -r i1 c1 < <(instructions "$b" "$N1")
  read -r i2 c2 < <(instructions "$b" "$N2")
  per[$b]=$(( (i2 - i1) / (N2 - N1) ))
  calls[$b]=$(awk -v c=$((c2 - c1)) -v n=$((N2 - N1)) 'BEGIN {printf "%.1f", n / c}')
  printf '%-10s %8d instructions per decision in Redis, %s decisions per script call\n' "$b" "${per[$b]}" "${calls[$b]}"
done
awk -v d="${per[Decide]}" -v o="${per[DecideOne]}" -v r="${per[RedisRate]}" -v c="$CALLERS" \
  'BEGIN {printf "callers=%d: per decision the store costs Redis %.2f times the instructions of one redis_rate Allow with 3 windows and a quota, %.2f with one window\n", c, d / r, o / r}'
