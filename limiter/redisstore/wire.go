package redisstore

import (
	"encoding/binary"
	"errors"
	"math"
)

// The script's arguments and replies are packed little-endian, numbers as
// float64 (exact for integers below 2^53, as Lua's numbers are).

// packer builds a packed argument.
type packer []byte

func (p packer) num(x int64) packer {
	return binary.LittleEndian.AppendUint64(p, math.Float64bits(float64(x)))
}

func (p packer) u8(x int) packer { return append(p, byte(x)) }

func (p packer) u16(x int) packer { return binary.LittleEndian.AppendUint16(p, uint16(x)) }

// str packs s after its length, as a byte.
func (p packer) str(s string) packer { return append(append(p, byte(len(s))), s...) }

// wire is a packed argument and the struct format that unpacks it all in
// one call (struct.unpack), so that the script reads a whole batch at
// once.
type wire struct {
	b packer
	f []byte
}

func (w *wire) num(x int64) { w.b, w.f = w.b.num(x), append(w.f, 'd') }

func (w *wire) u8(x int) { w.b, w.f = w.b.u8(x), append(w.f, 'B') }

func (w *wire) u16(x int) { w.b, w.f = w.b.u16(x), append(w.f, 'H') }

func (w *wire) flag(b bool) {
	if b {
		w.u8(1)
	} else {
		w.u8(0)
	}
}

// idg packs a window's name in its string, its id and bucket width,
// after its length.
func (w *wire) idg(id string, width int64) {
	w.b = append(w.b, byte(len(id)+8))
	w.b = append(w.b, id...)
	w.b = binary.LittleEndian.AppendUint64(w.b, math.Float64bits(float64(width)))
	w.f = append(w.f, "Bc0"...)
}

// format packs a struct format: head, then body n times, after its
// length (uint16).
func (w *wire) format(head, body string, n int) {
	w.b = binary.LittleEndian.AppendUint16(w.b, uint16(len(head)+n*len(body)))
	w.b = append(w.b, head...)
	for range n {
		w.b = append(w.b, body...)
	}
	w.f = append(w.f, "Hc0"...)
}

// idg returns a window's name in its string.
func idg(id string, width int64) string {
	return string(binary.LittleEndian.AppendUint64([]byte(id), math.Float64bits(float64(width))))
}

// num reads the number packed at s[off:].
func num(s string, off int) int64 {
	var u uint64
	for i := 7; i >= 0; i-- {
		u = u<<8 | uint64(s[off+i])
	}
	return int64(math.Float64frombits(u))
}

var errShort = errors.New("redisstore: script reply too short")

// reader reads a packed reply.
type reader struct {
	s   string
	off int
	err error
}

func (r *reader) num() int64 {
	if r.off+8 > len(r.s) {
		r.err = errShort
		return 0
	}
	x := num(r.s, r.off)
	r.off += 8
	return x
}
