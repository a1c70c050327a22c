package redisstore

import (
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"strings"
	"sync/atomic"
)

// numSlots is the number of Redis Cluster hash slots.
const numSlots = 16384

// hashTag returns the part of key between its first "{" and the next
// "}", when not empty: what Redis Cluster hashes instead of the whole key.
func hashTag(key string) (string, bool) {
	if e := tagEnd(key); e >= 0 {
		i := strings.IndexByte(key, '{')
		return key[i+1 : e], true
	}
	return key, false
}

// tagEnd returns the index of the "}" that ends key's hash tag, or -1
// when key has none.
func tagEnd(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return i + 1 + j
		}
	}
	return -1
}

// slot returns the Redis Cluster hash slot of key.
func slot(key string) int {
	tag, _ := hashTag(key)
	return int(crc16(tag) % numSlots)
}

// crc16 is CRC-16/XMODEM, the checksum Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^s[i]]
	}
	return crc
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// Undo, refund and reset calls are not idempotent, and go-redis sends a
// command again when its reply is lost (a read timeout, a reset
// connection; a cluster client also on its way to another node): a
// refund or an undo run twice gives back units that were used. So each
// such call carries, as its last key, a marker in the slot of its
// counters, named by an id of its own: the script stores its reply
// there, for markerTTL, and a second run finds it and returns it,
// changing nothing.
const markerTTL = 30 // seconds; retries of one command end well before

// opIDs makes ids unique to a call: counted up from a random start, so
// that the stores of different processes do not meet.
type opIDs struct{ next atomic.Uint64 }

func (o *opIDs) start() {
	var b [8]byte
	rand.Read(b[:])
	o.next.Store(binary.LittleEndian.Uint64(b[:]) >> 1)
}

func (o *opIDs) id() string { return strconv.FormatUint(o.next.Add(1), 36) }

// once gives c, whose keys are all in one slot, its marker key, last:
// the prefix and hash tag of its first key (ownerKey and quotaKey give
// every stored key a tag), so that it shares their slot.
func (s *Store) once(c *call) {
	k := c.keys[0]
	c.keys = append(c.keys, k[:tagEnd(k)+1]+":once:"+s.ops.id())
}
