package policy_test

import (
	"encoding/binary"
	"hash/fnv"
	"math/rand/v2"
	"testing"
)

// FuzzCompileMatchesOracle compiles the cluster the fuzzer's bytes choose and compares every
// connection in it with the oracle, as TestCompileMatchesOracle does for seeded clusters.
func FuzzCompileMatchesOracle(f *testing.F) {
	for _, seed := range []string{"", "\x00", "\x01\x02\x03\x04\x05\x06\x07\x08", "loom", "\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x03"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := genCluster(rand.New(newByteSource(data)))
		if err != nil {
			t.Fatalf("input %q: %v", data, err)
		}
		if _, m := compareWithOracle(s); m != nil {
			t.Fatalf("input %q:\n%s", data, m.report(s))
		}
	})
}

// byteSource makes the fuzzer's bytes the generator's choices: each Uint64 is the next
// eight bytes of the input, and once they run out, a generator seeded with a hash of it.
type byteSource struct {
	data []byte
	rest *rand.PCG
}

func newByteSource(data []byte) *byteSource {
	h := fnv.New64a()
	h.Write(data)
	return &byteSource{data: data, rest: rand.NewPCG(h.Sum64(), uint64(len(data)))}
}

func (b *byteSource) Uint64() uint64 {
	if len(b.data) == 0 {
		return b.rest.Uint64()
	}
	var buf [8]byte
	n := copy(buf[:], b.data)
	b.data = b.data[n:]
	return binary.LittleEndian.Uint64(buf[:])
}
