package delegate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// errSameAddress is what sameAddress refuses with.
var errSameAddress = errors.New("address asked for by another container")

// sameAddress is a Gate that refuses a container whose attachments ask ("ips") for an
// address an attachment of another recorded container asks for. It counts its calls.
type sameAddress struct {
	mu    sync.Mutex
	calls int
}

func (g *sameAddress) Admit(pod PodRef, specs []Spec, recorded func() ([]Record, error)) error {
	g.mu.Lock()
	g.calls++
	g.mu.Unlock()
	recs, err := recorded()
	if err != nil {
		return err
	}
	for _, s := range specs {
		for _, r := range recs {
			for _, e := range r.Attachments {
				if r.Pod.UID != pod.UID && fmt.Sprint(e.CapabilityArgs["ips"]) == fmt.Sprint(s.CapabilityArgs["ips"]) {
					return fmt.Errorf("pod %s: %w (pod %s)", pod, errSameAddress, r.Pod)
				}
			}
		}
	}
	return nil
}

func asking(addr string) []Spec {
	s := specs("default", "lan")
	s[1].CapabilityArgs = map[string]any{"ips": []string{addr}}
	return s
}

// TestAddGateRefusalLeavesNothing checks that a container the gate refuses gets no ledger
// record and no attachment call, and that the error is the gate's.
func TestAddGateRefusalLeavesNothing(t *testing.T) {
	o, rec, l := newTestOrchestrator(t)
	g := &sameAddress{}
	o.SetGate(g)
	ctx := context.Background()
	if _, err := o.Add(ctx, pod, "c1", "/ns/1", asking("192.0.2.7/24")); err != nil {
		t.Fatal(err)
	}
	other := PodRef{Namespace: "globex", Name: "g1", UID: "uid-g1"}
	_, err := o.Add(ctx, other, "c2", "/ns/2", asking("192.0.2.7/24"))
	if !errors.Is(err, errSameAddress) {
		t.Fatalf("second container: got %v, want the gate's refusal", err)
	}
	if _, ok, lerr := l.Load("c2"); lerr != nil || ok {
		t.Errorf("the refused container has a ledger record (%v)", lerr)
	}
	for _, c := range rec.log() {
		if c != "add default/eth0" && c != "add lan/net1" {
			t.Errorf("unexpected attachment call %q", c)
		}
	}
	if n := len(rec.log()); n != 2 {
		t.Errorf("attachment calls = %v, want only the first container's two", rec.log())
	}
}

// blocking is an Attachment whose Add waits until release is closed, after telling started.
type blocking struct {
	*recorder
	started chan string
	release chan struct{}
}

func (b *blocking) Add(ctx context.Context, c Call) (types.Result, error) {
	b.started <- string(c.ContainerID)
	<-b.release
	return b.recorder.Add(ctx, c)
}

// TestAddGateSeesAddsInProgress checks that the gate's decision for one container sees the
// attachments of another whose ADD is still running: of many containers added at the same
// moment asking for one address, exactly one is admitted, and the others are refused while
// it is still attaching.
func TestAddGateSeesAddsInProgress(t *testing.T) {
	o, _, _ := newTestOrchestrator(t)
	b := &blocking{recorder: newRecorder(), started: make(chan string, 16), release: make(chan struct{})}
	o.kinds["fake"] = b
	o.SetGate(&sameAddress{})
	ctx := context.Background()

	const n = 8
	type outcome struct {
		i   int
		err error
	}
	done := make(chan outcome, n)
	for i := range n {
		go func() {
			p := PodRef{Namespace: "ns", Name: fmt.Sprintf("p%d", i), UID: PodUID(fmt.Sprintf("uid-p%d", i))}
			_, err := o.Add(ctx, p, ContainerID(fmt.Sprintf("c%d", i)), "/ns", asking("2001:db8::7/64"))
			done <- outcome{i, err}
		}()
	}
	admitted := <-b.started
	for range n - 1 {
		select {
		case r := <-done:
			if !errors.Is(r.err, errSameAddress) {
				t.Errorf("container c%d: got %v, want a refusal", r.i, r.err)
			}
		case id := <-b.started:
			t.Fatalf("container %s was admitted too, beside %s", id, admitted)
		case <-time.After(10 * time.Second):
			t.Fatalf("the others were not refused while %s was attaching", admitted)
		}
	}
	close(b.release)
	if r := <-done; r.err != nil || fmt.Sprintf("c%d", r.i) != admitted {
		t.Errorf("container c%d: got %v, want %s admitted", r.i, r.err, admitted)
	}
}
