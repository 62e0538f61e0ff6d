package delegate

import (
	"strings"
	"testing"
)

// FuzzValidContainers feeds the GC configuration parser arbitrary stdin: no panic, and every
// plain container ID it returns was named in the input (IDs with characters JSON escapes are
// not compared).
func FuzzValidContainers(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"loom","cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}`))
	f.Add([]byte(`{"cni.dev/attachments":[{"containerID":"x","ifname":"eth0"}]}`))
	f.Add([]byte(`{"cni.dev/valid-attachments":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		valid, err := ValidContainers(b)
		if err != nil {
			return
		}
		for id := range valid {
			plain := containerIDPattern.MatchString(string(id))
			if plain && !strings.Contains(string(b), string(id)) {
				t.Fatalf("container %q not in the input %q", id, b)
			}
		}
	})
}
