package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// request is one offered request: its time in microseconds since the
// Unix epoch, and its cost.
type request struct {
	at, cost int64
}

// admission is one admitted request, like request.
type admission = request

// testPropertyAnyInterval drives the store through random arrival
// patterns on several sets of limits and checks (a) that no closed
// interval [t-W, t] ever holds more than Limit for any limit, and (c)
// that every decision is the one the reference model of the algorithm
// (limiter.Buckets) makes, statuses included.
func testPropertyAnyInterval(e *env) {
	sets := []struct {
		name    string
		limits  []limiter.Limit
		maxCost int64
	}{
		{"plan+route", []limiter.Limit{
			e.rate("a/plan-1s", 10, time.Second),
			e.rate("a/plan-5s", 30, 5*time.Second),
			e.rate("a/route-1s", 7, time.Second),
		}, 3},
		{"odd-windows", []limiter.Limit{
			e.rate("b/13-1.3s", 13, 1300*time.Millisecond),
			e.rate("b/40-2.345678s", 40, 2345678*time.Microsecond),
		}, 4},
		{"rounded-buckets", []limiter.Limit{
			e.rate("c/5-1.000001s", 5, 1000001*time.Microsecond),
			e.rate("c/12-2.999999s", 12, 2999999*time.Microsecond),
		}, 2},
	}
	for i, set := range sets {
		rng := rand.New(rand.NewPCG(uint64(i)+1, 0x6761_6961))
		start := e.clock.Now().Add(time.Hour).Truncate(time.Second).UnixMicro()
		reqs := arrivals(rng, start, set.limits, int64(e.scale*float64((600*time.Second).Microseconds())), set.maxCost)
		adm, err := simulate(e.ctx, e.store, e.clock, set.limits, reqs, true)
		if err != nil {
			e.Fatalf("%s: %v", set.name, err)
		}
		for _, l := range set.limits {
			if err := checkAnyInterval(adm, l); err != nil {
				e.Errorf("%s: %v", set.name, err)
			}
		}
		e.Logf("%s: %d requests, %d admitted", set.name, len(reqs), len(adm))
	}
}

// testPropertyUtilisation offers a request every 1 to 5ms for 210
// windows (scaled by Options.Scale, at least 60) and checks (b) that at
// least 95% of Limit is admitted per window on average, besides (a) and
// (c).
func testPropertyUtilisation(e *env) {
	cases := []struct {
		limit   limiter.Limit
		maxCost int64
	}{
		{e.rate("u/10-1s", 10, time.Second), 1},
		{e.rate("u/7-1.3s", 7, 1300*time.Millisecond), 3},
		{e.rate("u/20-1.000001s", 20, 1000001*time.Microsecond), 1},
	}
	windows := max(int64(210*e.scale), 60)
	for i, c := range cases {
		rng := rand.New(rand.NewPCG(uint64(i)+11, 0x6761_6961))
		w := c.limit.Window.Microseconds()
		start := e.clock.Now().Add(time.Hour).Truncate(time.Second).UnixMicro()
		var reqs []request
		for t := start; t < start+windows*w; t += 1000 + rng.Int64N(4001) {
			reqs = append(reqs, request{t, 1 + rng.Int64N(c.maxCost)})
		}
		limits := []limiter.Limit{c.limit}
		adm, err := simulate(e.ctx, e.store, e.clock, limits, reqs, true)
		if err != nil {
			e.Fatalf("%v: %v", c.limit, err)
		}
		if err := checkAnyInterval(adm, c.limit); err != nil {
			e.Error(err)
		}
		// Skip the first window, which starts with a full budget.
		var admitted int64
		for _, a := range adm {
			if a.at >= start+w {
				admitted += a.cost
			}
		}
		util := float64(admitted) / float64(c.limit.Limit*(windows-1))
		e.Logf("utilisation %v (costs 1..%d): %.2f%% of Limit per window over %d windows, %d requests offered",
			c.limit, c.maxCost, 100*util, windows-1, len(reqs))
		if util < 0.95 {
			e.Errorf("utilisation %v = %.2f%%, want >= 95%%", c.limit, 100*util)
		}
	}
}

// arrivals returns requests from start (µs) for about dur (µs), in time
// order, mixing bursts, streams faster than the limits, bursts straddling
// multiples of a window or of a bucket width, bursts exactly one window
// apart, and idle gaps, with costs 1..maxCost.
func arrivals(rng *rand.Rand, start int64, limits []limiter.Limit, dur, maxCost int64) []request {
	var reqs []request
	t := start
	add := func(n int) {
		for range n {
			reqs = append(reqs, request{t, 1 + rng.Int64N(maxCost)})
		}
	}
	window := func() (w, g int64) {
		l := limits[rng.IntN(len(limits))]
		return l.Window.Microseconds(), limiter.BucketWidth(l.Window).Microseconds()
	}
	for t < start+dur {
		switch rng.IntN(5) {
		case 0: // a burst at one instant, or a few µs apart
			spread := rng.IntN(2) == 0
			for range 1 + rng.IntN(25) {
				add(1)
				if spread {
					t += rng.Int64N(5)
				}
			}
		case 1: // a steady stream, several times faster than the limits
			w, _ := window()
			step := max(w/(20+rng.Int64N(200)), 1)
			for range 10 + rng.IntN(300) {
				add(1)
				t += step
			}
		case 2: // bursts just before and just after a multiple of a window (or of a bucket width) since the epoch
			w, g := window()
			unit := w
			if rng.IntN(3) == 0 {
				unit = g
			}
			edge := (t/unit + 1) * unit
			t = max(t, edge-1-rng.Int64N(2*g))
			add(1 + rng.IntN(15))
			t = edge + rng.Int64N(2*g)
			add(1 + rng.IntN(15))
		case 3: // bursts one window apart, give or take a microsecond
			w, _ := window()
			add(1 + rng.IntN(15))
			t += w - 1 + rng.Int64N(3)
			add(1 + rng.IntN(15))
		case 4: // idle
			w, _ := window()
			t += rng.Int64N(w * 3 / 2)
		}
	}
	return reqs
}

// simulate offers reqs to s in order, setting clock to each request's
// time, and returns the admitted ones. With check it compares every
// decision with the reference model and fails at the first difference.
// The limits must be rate limits, and not shadow ones.
func simulate(ctx context.Context, s limiter.Store, clock *Clock, limits []limiter.Limit, reqs []request, check bool) ([]admission, error) {
	models := make([]model, len(limits))
	for i, l := range limits {
		models[i] = model{Limit: l, width: limiter.BucketWidth(l.Window).Microseconds()}
	}
	var adm []admission
	for n, r := range reqs {
		clock.Set(time.UnixMicro(r.at).UTC())
		d, err := s.Decide(ctx, limits, r.cost)
		if err != nil {
			return adm, fmt.Errorf("request %d: %w", n, err)
		}
		if len(d.Statuses) != len(limits) || len(d.Missing) > 0 {
			return adm, fmt.Errorf("request %d: %d statuses, missing %v", n, len(d.Statuses), d.Missing)
		}
		if d.Allowed {
			adm = append(adm, r)
		}
		if !check {
			continue
		}
		allowed := true
		want := make([]limiter.Status, len(limits))
		for i := range models {
			want[i] = models[i].status(r.at, r.cost)
			allowed = allowed && !want[i].Exceeded
		}
		if d.Allowed != allowed {
			return adm, fmt.Errorf("request %d (cost %d at %s): allowed = %v, the model says %v; statuses: %s",
				n, r.cost, clock.Now().Format(time.RFC3339Nano), d.Allowed, allowed, statuses(d))
		}
		for i := range models {
			if allowed {
				models[i].charge(r.at, r.cost)
				want[i] = models[i].status(r.at, 0)
				want[i].Charged = true
			}
			got := d.Statuses[i]
			if got.Used != want[i].Used || got.Remaining != want[i].Remaining || got.Exceeded != want[i].Exceeded ||
				got.Charged != want[i].Charged || got.Reset != want[i].Reset || (got.Exceeded && got.RetryAfter != want[i].RetryAfter) {
				return adm, fmt.Errorf("request %d (cost %d at %s), %v: got used=%d remaining=%d exceeded=%v charged=%v reset=%v retry=%v, the model says %d %d %v %v %v %v",
					n, r.cost, clock.Now().Format(time.RFC3339Nano), limits[i],
					got.Used, got.Remaining, got.Exceeded, got.Charged, got.Reset, got.RetryAfter,
					want[i].Used, want[i].Remaining, want[i].Exceeded, want[i].Charged, want[i].Reset, want[i].RetryAfter)
			}
		}
	}
	return adm, nil
}

// model is the algorithm of limiter.Buckets for one rate limit, written
// as plainly as it is defined: a list of charges with their bucket
// numbers. Time must not go back.
type model struct {
	limiter.Limit
	width   int64 // µs
	charges []request
}

// status returns the limit's status for a request of cost at now (µs),
// before any charge. RetryAfter is set only when Exceeded.
func (m *model) status(now, cost int64) limiter.Status {
	b := floorDiv(now, m.width)
	for len(m.charges) > 0 && m.charges[0].at < b-limiter.Buckets {
		m.charges = m.charges[1:]
	}
	var used int64
	for _, c := range m.charges {
		used += c.cost
	}
	s := limiter.Status{Limit: m.Limit, Used: used, Remaining: max(m.Limit.Limit-used, 0)}
	leaves := func(bucket int64) time.Duration {
		return time.Duration((bucket+limiter.Buckets+1)*m.width-now) * time.Microsecond
	}
	if used > 0 {
		s.Reset = leaves(m.charges[0].at)
	}
	if used+cost <= m.Limit.Limit {
		return s
	}
	s.Exceeded = true
	if cost > m.Limit.Limit {
		s.RetryAfter = m.Window
		return s
	}
	var freed int64
	for _, c := range m.charges {
		if freed += c.cost; used-freed+cost <= m.Limit.Limit {
			s.RetryAfter = leaves(c.at)
			break
		}
	}
	return s
}

// charge adds cost at now (µs); charges hold bucket numbers in at.
func (m *model) charge(now, cost int64) {
	m.charges = append(m.charges, request{floorDiv(now, m.width), cost})
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// checkAnyInterval reports the first closed interval [t-W, t] ending at
// an admission that holds more than l.Limit. adm is in time order.
func checkAnyInterval(adm []admission, l limiter.Limit) error {
	w := l.Window.Nanoseconds()
	var sum int64
	lo := 0
	for hi := 0; hi < len(adm); {
		t := adm[hi].at
		for ; hi < len(adm) && adm[hi].at == t; hi++ {
			sum += adm[hi].cost
		}
		for adm[lo].at*1000 < t*1000-w {
			sum -= adm[lo].cost
			lo++
		}
		if sum > l.Limit {
			end := time.UnixMicro(t).UTC()
			return fmt.Errorf("%v: %d admitted in [%s, %s]",
				l, sum, end.Add(-l.Window).Format(time.RFC3339Nano), end.Format(time.RFC3339Nano))
		}
	}
	return nil
}
