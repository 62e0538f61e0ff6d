package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// Privileged tests create network namespaces named loompt<pid>-<n>: unique to the test
// process, removed when the test ends, and recognised as stale by a later run if the
// process died first.
const applyNetnsPrefix = "loompt"

var (
	applyNetnsCount atomic.Int64
	applyNetnsReap  sync.Once
)

// applyNetns creates a network namespace for the test and returns its path.
func applyNetns(t testing.TB) string {
	t.Helper()
	applyNetnsReap.Do(reapApplyNetns)
	name := fmt.Sprintf("%s%d-%d", applyNetnsPrefix, os.Getpid(), applyNetnsCount.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return "/run/netns/" + name
}

// reapApplyNetns removes the namespaces of earlier test processes that no longer run.
func reapApplyNetns() {
	des, _ := os.ReadDir("/run/netns")
	for _, de := range des {
		rest, ok := strings.CutPrefix(de.Name(), applyNetnsPrefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		exec.Command("ip", "netns", "del", de.Name()).Run()
	}
}

// applyExec runs a command in the namespace at path and returns its output.
func applyExec(t testing.TB, path string, argv ...string) string {
	t.Helper()
	out, err := applyExecErr(path, argv...)
	if err != nil {
		t.Fatalf("in %s: %s: %v", path, strings.Join(argv, " "), err)
	}
	return out
}

func applyExecErr(path string, argv ...string) (string, error) {
	name := strings.TrimPrefix(path, "/run/netns/")
	out, err := exec.Command("ip", append([]string{"netns", "exec", name}, argv...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, out)
	}
	return string(out), nil
}

// listing is the namespace's table as "nft list table" shows it, put in an order that does
// not depend on the order things were created in: blocks sorted, elements sorted, rules
// in their order.
func applyListing(t testing.TB, nft, path string) string {
	t.Helper()
	return normalNftListing(applyExec(t, path, nft, "list", "table", "inet", "loom"))
}

func normalNftListing(text string) string {
	var blocks []string
	var cur []string
	var elems []string
	inElems := false
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "table "):
		case inElems || strings.HasPrefix(line, "elements = {"):
			body := strings.TrimPrefix(line, "elements = {")
			inElems = !strings.HasSuffix(body, "}")
			for _, e := range strings.Split(strings.TrimSuffix(body, "}"), ",") {
				if e = strings.TrimSpace(e); e != "" {
					elems = append(elems, e)
				}
			}
			if !inElems {
				slices.Sort(elems)
				cur = append(cur, "elements = { "+strings.Join(elems, ", ")+" }")
				elems = nil
			}
		case line == "}":
			if len(cur) > 0 {
				blocks = append(blocks, strings.Join(cur, "\n\t"))
			}
			cur = nil
		default:
			cur = append(cur, line)
		}
	}
	slices.Sort(blocks)
	return strings.Join(blocks, "\n")
}

// applyTestLogger returns a logger writing into buf, safe for concurrent use.
func applyTestLogger(buf *applyLogBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type applyLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *applyLogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *applyLogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestApplySteps applies a sequence of tables in place and checks after each step that
// the kernel holds what a fresh full write of the same table gives.
func TestApplySteps(t *testing.T) {
	nft := nftForTest(t)
	ctx := context.Background()
	inc, fresh := applyNetns(t), applyNetns(t)
	var logs applyLogBuffer
	a := NewApplier(nft, inc, applyTestLogger(&logs))

	one := map[string]string{"loom0000000000a": "10.244.0.10"}
	two := map[string]string{"loom0000000000a": "10.244.0.10", "loom0000000000b": "10.244.0.11"}
	widened := renderHostTable()
	widened.Sets["t_acme"] = AddrSet{Prefixes: renderPrefixes("10.244.0.0/24", "10.244.7.0/26")}
	steps := []struct {
		name string
		want NftTable
	}{
		{"first", Render(txnTable(one, false), HostTable)},
		{"pod added", Render(txnTable(two, false), HostTable)},
		{"policy isolates", Render(txnTable(two, true), HostTable)},
		{"pod removed", Render(txnTable(one, true), HostTable)},
		{"every rule shape", Render(renderHostTable(), HostTable)},
		{"prefixes widened", Render(widened, HostTable)},
		{"back", Render(renderHostTable(), HostTable)},
		{"to a pod table", Render(renderPodTable(), PodTable)},
		{"ipv6 and odd names", Render(renderEdgeTable(), PodTable)},
		{"empty", Render(Table{}, PodTable)},
	}
	for i, step := range steps {
		if err := a.Apply(ctx, step.want); err != nil {
			t.Fatalf("step %s: %v", step.name, err)
		}
		if err := NewApplier(nft, fresh, nil).Apply(ctx, step.want); err != nil {
			t.Fatalf("step %s: fresh apply: %v", step.name, err)
		}
		if got, want := applyListing(t, nft, inc), applyListing(t, nft, fresh); got != want {
			t.Errorf("step %s: after the update the kernel holds\n%s\nwant, as a full write gives,\n%s", step.name, got, want)
		}
		if err := a.Verify(ctx); err != nil {
			t.Errorf("step %s: verify: %v", step.name, err)
		}
		if i > 0 && strings.Contains(logs.String(), "replacing") {
			t.Fatalf("step %s: the update fell back to a full write:\n%s", step.name, logs.String())
		}
	}
}

// TestApplyVerifyRepairs damages the table by hand in each way Verify must notice, and
// checks that the next Apply restores it.
func TestApplyVerifyRepairs(t *testing.T) {
	nft := nftForTest(t)
	ctx := context.Background()
	path := applyNetns(t)
	a := NewApplier(nft, path, nil)
	want := Render(txnTable(map[string]string{"loom0000000000a": "10.244.0.10", "loom0000000000b": "10.244.0.11"}, true), HostTable)
	if err := a.Apply(ctx, want); err != nil {
		t.Fatal(err)
	}
	good := applyListing(t, nft, path)
	for _, tc := range []struct {
		name   string
		damage func()
	}{
		{"rule deleted", func() {
			out := applyExec(t, path, nft, "-a", "list", "chain", "inet", "loom", "in_loom0000000000a")
			m := regexp.MustCompile(`accept comment "acme/web" # handle (\d+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no handle in:\n%s", out)
			}
			applyExec(t, path, nft, "delete", "rule", "inet", "loom", "in_loom0000000000a", "handle", m[1])
		}},
		{"rule added", func() { applyExec(t, path, nft, "add", "rule", "inet", "loom", "to_pod", "accept") }},
		{"set element deleted", func() { applyExec(t, path, nft, "delete", "element", "inet", "loom", "t_acme_a", "{ 10.244.0.11 }") }},
		{"set element added", func() { applyExec(t, path, nft, "add", "element", "inet", "loom", "u_primary_n", "{ 192.168.0.0/16 }") }},
		{"map element deleted", func() {
			applyExec(t, path, nft, "delete", "element", "inet", "loom", "ingress", `{ "loom0000000000b" }`)
		}},
		{"chain added", func() { applyExec(t, path, nft, "add", "chain", "inet", "loom", "extra") }},
		{"table deleted", func() { applyExec(t, path, nft, "delete", "table", "inet", "loom") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := a.Verify(ctx); err != nil {
				t.Fatalf("verify before the damage: %v", err)
			}
			tc.damage()
			err := a.Verify(ctx)
			if !errors.Is(err, ErrDrift) {
				t.Fatalf("verify after the damage: got %v, want an error wrapping ErrDrift", err)
			}
			t.Logf("verify: %v", err)
			if err := a.Apply(ctx, want); err != nil {
				t.Fatalf("apply after the damage: %v", err)
			}
			if got := applyListing(t, nft, path); got != good {
				t.Errorf("after repair the kernel holds\n%s\nwant\n%s", got, good)
			}
			if err := a.Verify(ctx); err != nil {
				t.Errorf("verify after repair: %v", err)
			}
		})
	}
}

// TestApplyFallsBack checks that an update nft refuses, because the table changed behind
// the Applier's back, is followed by a full write that succeeds.
func TestApplyFallsBack(t *testing.T) {
	nft := nftForTest(t)
	ctx := context.Background()
	path := applyNetns(t)
	var logs applyLogBuffer
	a := NewApplier(nft, path, applyTestLogger(&logs))
	one := map[string]string{"loom0000000000a": "10.244.0.10"}
	two := map[string]string{"loom0000000000a": "10.244.0.10", "loom0000000000b": "10.244.0.11"}
	if err := a.Apply(ctx, Render(txnTable(one, false), HostTable)); err != nil {
		t.Fatal(err)
	}
	// The update flushes and refills in_loom0000000000a, which is no longer there.
	applyExec(t, path, nft, "delete", "element", "inet", "loom", "ingress", `{ "loom0000000000a" }`)
	applyExec(t, path, nft, "delete", "chain", "inet", "loom", "in_loom0000000000a")
	want := Render(txnTable(two, true), HostTable)
	if err := a.Apply(ctx, want); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if !strings.Contains(logs.String(), "replacing") {
		t.Errorf("the refused update was not logged:\n%s", logs.String())
	}
	if err := a.Verify(ctx); err != nil {
		t.Errorf("verify: %v", err)
	}
}

// TestApplyDelete checks that Delete removes the table and succeeds when there is nothing
// to remove, the namespace included.
func TestApplyDelete(t *testing.T) {
	nft := nftForTest(t)
	ctx := context.Background()
	path := applyNetns(t)
	a := NewApplier(nft, path, nil)
	if err := a.Apply(ctx, Render(renderPodTable(), PodTable)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := a.Delete(ctx); err != nil {
			t.Fatalf("delete %d: %v", i+1, err)
		}
	}
	if out := applyExec(t, path, nft, "list", "tables"); strings.Contains(out, "loom") {
		t.Errorf("the table is still there:\n%s", out)
	}
	if err := a.Verify(ctx); err != nil {
		t.Errorf("verify after delete: %v", err)
	}
	if err := a.Apply(ctx, Render(renderPodTable(), PodTable)); err != nil {
		t.Errorf("apply after delete: %v", err)
	}
	gone := NewApplier(nft, "/run/netns/"+applyNetnsPrefix+"-no-such-netns", nil)
	if err := gone.Delete(ctx); err != nil {
		t.Errorf("delete in a namespace that does not exist: %v", err)
	}
	if err := gone.Apply(ctx, Render(Table{}, PodTable)); err == nil {
		t.Errorf("apply in a namespace that does not exist succeeded")
	}
}

// TestApplyRunsInItsNetns writes different tables into two namespaces from many goroutines
// at once and checks that each namespace holds its own: nft, started from a thread locked
// into a namespace, runs in that namespace.
func TestApplyRunsInItsNetns(t *testing.T) {
	nft := nftForTest(t)
	ctx := context.Background()
	paths := []string{applyNetns(t), applyNetns(t)}
	tables := []NftTable{Render(renderPodTable(), PodTable), Render(renderHostTable(), HostTable)}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := NewApplier(nft, paths[i%2], nil)
			errs <- a.Apply(ctx, tables[i%2])
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, path := range paths {
		ref := applyNetns(t)
		if err := NewApplier(nft, ref, nil).Apply(ctx, tables[i]); err != nil {
			t.Fatal(err)
		}
		if got, want := applyListing(t, nft, path), applyListing(t, nft, ref); got != want {
			t.Errorf("namespace %d holds\n%s\nwant\n%s", i, got, want)
		}
	}
}
