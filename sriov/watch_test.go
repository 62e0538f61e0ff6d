package sriov_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/sriovtest"
)

// call is one call of Watch's fn.
type call struct {
	assigned map[sriov.ResourceName][]sriov.VF
	err      error
}

// watch runs Watch over tree with pools until the test ends and returns its calls.
func watch(t *testing.T, tree *sriovtest.Tree, pools []sriov.PoolConfig) <-chan call {
	t.Helper()
	calls := make(chan call, 64)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sriov.Watch(ctx, sriov.NewScanner(tree.Root), pools, 5*time.Millisecond, func(a map[sriov.ResourceName][]sriov.VF, err error) {
			select {
			case calls <- call{a, err}:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return calls
}

func next(t *testing.T, calls <-chan call) call {
	t.Helper()
	select {
	case c := <-calls:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not call")
		return call{}
	}
}

// health renders a pool's VFs as their netdevs, each with "+" when its link is up.
func health(vfs []sriov.VF) []string {
	out := []string{}
	for _, vf := range vfs {
		s := vf.Netdev
		if vf.LinkUp {
			s += "+"
		}
		out = append(out, s)
	}
	return out
}

// TestWatch checks that Watch passes each change on, and calls fn again only when the
// assignment changed or a scan failed. A scan that runs while sriovtest is halfway through a
// change can fail or see part of it, as one running while the kernel is can; those calls are
// skipped.
func TestWatch(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(1, 1)...)
	pool := sriov.PoolConfig{Name: "loom.dev/a", PFs: []sriov.PFSelector{{PF: "ens1f0"}}}
	calls := watch(t, tree, []sriov.PoolConfig{pool})

	var prev []string // the last assignment passed on, nil after an error
	for _, step := range []struct {
		name   string
		change func() error
		want   []string
	}{
		{"first scan", func() error { return nil }, []string{"ens1f0v0+"}},
		{"sriov_numvfs raised", func() error { return tree.SetNumVFs("ens1f0", 2) }, []string{"ens1f0v0+", "ens1f0v1+"}},
		{"link down", func() error { return tree.SetOperstate("ens1f0v1", "down") }, []string{"ens1f0v0+", "ens1f0v1"}},
		{"VF removed", func() error { return tree.RemoveVF("ens1f0", 0) }, []string{"ens1f0v1"}},
		{"sriov_numvfs 0", func() error { return tree.SetNumVFs("ens1f0", 0) }, []string{}},
	} {
		if err := step.change(); err != nil {
			t.Fatal(err)
		}
		for {
			c := next(t, calls)
			if c.err != nil {
				prev = nil
				continue
			}
			got := health(c.assigned[pool.Name])
			if prev != nil && equal(got, prev) {
				t.Fatalf("%s: fn called again with the same assignment %v", step.name, got)
			}
			prev = got
			if equal(got, step.want) {
				break
			}
		}
	}
}

// TestWatchScanError checks that a failed scan is passed on, and that the next good scan is
// passed on even though nothing changed.
func TestWatchScanError(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(1, 1)...)
	pool := sriov.PoolConfig{Name: "loom.dev/a"}
	calls := watch(t, tree, []sriov.PoolConfig{pool})
	first := next(t, calls)
	if first.err != nil {
		t.Fatal(first.err)
	}

	modalias := filepath.Join(tree.DeviceDir(tree.VFAddress("ens1f0", 0)), "modalias")
	good, err := os.ReadFile(modalias)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(modalias, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var malformed *sriov.MalformedError
	if c := next(t, calls); !errors.As(c.err, &malformed) || c.assigned != nil {
		t.Fatalf("after a malformed entry: fn(%v, %v), want a *sriov.MalformedError", c.assigned, c.err)
	}
	if err := os.WriteFile(modalias, good, 0o644); err != nil {
		t.Fatal(err)
	}
	for {
		c := next(t, calls)
		if errors.As(c.err, &malformed) {
			continue // scans that ran before the fix
		}
		if c.err != nil || !equal(health(c.assigned[pool.Name]), health(first.assigned[pool.Name])) {
			t.Fatalf("after the fix: fn(%v, %v), want the first assignment again", c.assigned, c.err)
		}
		break
	}
}
