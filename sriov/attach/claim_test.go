package attach

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/loom-cni/loom/delegate"
)

func TestClaims(t *testing.T) {
	s := claims{dir: filepath.Join(t.TempDir(), "claims")}
	ctx := context.Background()
	unlock, err := s.lock(ctx, "0000:3b:02.0")
	if err != nil {
		t.Fatal(err)
	}
	c := claim{ContainerID: "c1", Ifname: "net1", VF: "0000:3b:02.0", Index: 0}
	if err = s.create(c); err != nil {
		t.Fatal(err)
	}
	other := c
	other.ContainerID = "c2"
	if err = s.create(other); !errors.Is(err, errClaimed) {
		t.Fatalf("second claim of a vf: %v, want errClaimed", err)
	}
	got, ok, err := s.load(c.VF)
	if err != nil || !ok || got.ContainerID != "c1" {
		t.Fatalf("load = %+v, %v, %v", got, ok, err)
	}
	c.IPAM = true
	if err = s.save(c); err != nil {
		t.Fatal(err)
	}
	if got, _, _ = s.load(c.VF); !got.IPAM {
		t.Error("save did not replace the claim")
	}

	// Another call for the VF waits for the lock, until its context is done.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err = s.lock(short, c.VF); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lock of a locked vf: %v, want a deadline", err)
	}
	unlock()
	unlock2, err := s.lock(ctx, c.VF)
	if err != nil {
		t.Fatal(err)
	}
	unlock2()

	addr, err := s.find(delegate.Call{ContainerID: "c1", Spec: delegate.Spec{Ifname: "net1"}})
	if err != nil || addr != c.VF {
		t.Errorf("find = %q, %v", addr, err)
	}
	addr, err = s.find(delegate.Call{ContainerID: "c1", Spec: delegate.Spec{Ifname: "net2"}})
	if err != nil || addr != "" {
		t.Errorf("find of another interface = %q, %v", addr, err)
	}
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		if e.Name() != c.VF+".json" && e.Name() != c.VF+".lock" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	if err = s.remove(c.VF); err != nil {
		t.Fatal(err)
	}
	if err = s.remove(c.VF); err != nil {
		t.Errorf("removing a claim twice: %v", err)
	}
	if addrs, lerr := s.list(); lerr != nil || len(addrs) != 0 {
		t.Errorf("list after remove = %v, %v", addrs, err)
	}
}
