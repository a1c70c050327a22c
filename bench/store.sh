#!/usr/bin/env bash
# Decisions/s of the Redis store next to go-redis/redis_rate, in
# alternating rounds on one dedicated redis-server (each benchmark in a
# process of its own, the order turned round every round), so that the
# machine's noise hits all alike; prints each round's ratio and the
# medians.
#
#   bench/store.sh                  # 64 callers, 5 rounds of 3 s
#   CALLERS=16 ROUNDS=9 BENCHTIME=2s bench/store.sh
#
# BenchmarkDecide decides three rate windows and a daily quota per
# request, BenchmarkDecideOne one rate window (like for like with
# BenchmarkRedisRate, one limit per Allow); see
# limiter/redisstore/bench_test.go.
set -euo pipefail
cd "$(dirname "$0")/.."

CALLERS=${CALLERS:-64}
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-3s}
PORT=${PORT:-9108}
out=bench/out
mkdir -p "$out"
go test -c -o "$out/redisstore.test" ./limiter/redisstore

redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --logfile "$out/store-redis.log" & redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# bench NAME: one run of benchmark NAME; prints its decisions/s.
bench() {
  GAIA_TEST_REDIS_URL="redis://127.0.0.1:$PORT/0" "$out/redisstore.test" -test.run '^$' \
    -test.bench "^$1\$/^callers=$CALLERS\$" -test.benchtime "$BENCHTIME" |
    awk '/^Benchmark/ {for (i = 2; i <= NF; i++) if ($i == "decisions/s") v = $(i-1)} END {if (v == "") exit 1; print v}'
}

# round I: the three benchmarks, each in a process of its own, in an
# order that turns round every round; prints their decisions/s.
round() {
  local names=(BenchmarkDecide BenchmarkDecideOne BenchmarkRedisRate) n
  declare -A v
  if (($1 % 2 == 0)); then names=(BenchmarkRedisRate BenchmarkDecideOne BenchmarkDecide); fi
  for n in "${names[@]}"; do v[$n]=$(bench "$n") || return 1; done
  echo "${v[BenchmarkDecide]} ${v[BenchmarkDecideOne]} ${v[BenchmarkRedisRate]}"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

ratios=() ones=()
for i in $(seq "$ROUNDS"); do
  read -r d o r < <(round "$i") || { echo "round $i: a benchmark did not run" >&2; exit 1; }
  x=$(awk -v a="$d" -v b="$r" 'BEGIN {printf "%.2f", a/b}')
  y=$(awk -v a="$o" -v b="$r" 'BEGIN {printf "%.2f", a/b}')
  ratios+=("$x") ones+=("$y")
  printf 'round %d: Decide %.0f, DecideOne %.0f, RedisRate %.0f decisions/s: x %s (three windows and a quota), x %s (one window)\n' "$i" "$d" "$o" "$r" "$x" "$y"
done
echo
echo "$CALLERS callers, $ROUNDS rounds of $BENCHTIME, medians of the per-round ratios to redis_rate:"
echo "  three windows and a quota: $(printf '%s\n' "${ratios[@]}" | median) (rounds: ${ratios[*]})"
echo "  one window:                $(printf '%s\n' "${ones[@]}" | median) (rounds: ${ones[*]})"
