package admin

import (
	"math"
	"math/bits"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// subjectBits sets the size of a subjectSketch: 2^11 registers, about
// 2.3% standard error on large counts, and exact in practice on small
// ones (where linear counting takes over).
const subjectBits = 11

// subjectSketch estimates how many distinct subjects were seen: a
// HyperLogLog sketch. Sketches of several replicas merge (register-wise
// max) into the count of the union, so the cluster's active subjects are
// counted once each, not once per replica they hit, in bounded memory
// whatever the number of subjects. add is lock-free and allocation-free.
// The hash is fixed (xxhash), so sketches of different processes agree.
type subjectSketch [1 << subjectBits]atomic.Uint32

// add counts subject.
func (s *subjectSketch) add(subject string) {
	h := xxhash.Sum64String(subject)
	// The top bits choose the register; the rank of the rest is its
	// leading zeros plus one, capped by a sentinel bit.
	rank := uint32(bits.LeadingZeros64(h<<subjectBits|1<<(subjectBits-1))) + 1
	r := &s[h>>(64-subjectBits)]
	for {
		old := r.Load()
		if rank <= old || r.CompareAndSwap(old, rank) {
			return
		}
	}
}

// registers returns the sketch as one byte per register, for the bus.
func (s *subjectSketch) registers() []byte {
	b := make([]byte, len(s))
	for i := range s {
		b[i] = byte(s[i].Load())
	}
	return b
}

// mergeRegisters folds src into dst, register-wise max. A src of another
// size (another version) is ignored.
func mergeRegisters(dst, src []byte) {
	if len(src) != len(dst) {
		return
	}
	for i, r := range src {
		dst[i] = max(dst[i], r)
	}
}

// estimate returns the number of distinct subjects in registers.
func estimate(regs []byte) int64 {
	if len(regs) == 0 {
		return 0
	}
	m := float64(len(regs))
	sum, zeros := 0.0, 0
	for _, r := range regs {
		sum += math.Ldexp(1, -int(r))
		if r == 0 {
			zeros++
		}
	}
	e := 0.7213 / (1 + 1.079/m) * m * m / sum
	if e <= 2.5*m && zeros > 0 {
		e = m * math.Log(m/float64(zeros)) // linear counting
	}
	return int64(math.Round(e))
}
