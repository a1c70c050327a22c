package redisstore

import (
	"encoding/binary"
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

// num reads the number packed at s[off:].
func num(s string, off int) int64 {
	var u uint64
	for i := 7; i >= 0; i-- {
		u = u<<8 | uint64(s[off+i])
	}
	return int64(math.Float64frombits(u))
}
