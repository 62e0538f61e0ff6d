package delegate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// recorder is a fake Attachment that records every call as "op network/ifname" and fails the
// calls named in failOn.
type recorder struct {
	mu     sync.Mutex
	calls  []string
	failOn map[string]error
	held   map[string]bool // attachments currently "attached", keyed by container/ifname
	gc     [][2]int        // len(known), len(live) of each GC call
}

func newRecorder() *recorder {
	return &recorder{failOn: map[string]error{}, held: map[string]bool{}}
}

func (r *recorder) record(op string, c Call) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := fmt.Sprintf("%s %s/%s", op, c.Network, c.Ifname)
	r.calls = append(r.calls, key)
	if err := r.failOn[key]; err != nil {
		return err
	}
	hk := string(c.ContainerID) + "/" + c.Ifname
	switch op {
	case "add":
		r.held[hk] = true
	case "del":
		delete(r.held, hk)
	}
	return nil
}

func (r *recorder) Add(_ context.Context, c Call) (types.Result, error) {
	if err := r.record("add", c); err != nil {
		return nil, err
	}
	return &current.Result{CNIVersion: "1.1.0", Interfaces: []*current.Interface{{Name: c.Ifname, Sandbox: c.Netns}}}, nil
}

func (r *recorder) Check(_ context.Context, c Call, prev types.Result) error {
	if prev == nil {
		return errors.New("check without prevResult")
	}
	return r.record("check", c)
}

func (r *recorder) Del(_ context.Context, c Call, _ types.Result) error { return r.record("del", c) }

func (r *recorder) GC(_ context.Context, known []Spec, live []Call) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gc = append(r.gc, [2]int{len(known), len(live)})
	return nil
}

func (r *recorder) log() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func specs(names ...string) []Spec {
	var out []Spec
	for i, n := range names {
		ifname := fmt.Sprintf("net%d", i)
		if i == 0 {
			ifname = "eth0"
		}
		out = append(out, Spec{Network: n, Ifname: ifname, Default: i == 0, Kind: "fake", Config: json.RawMessage(`{}`)})
	}
	return out
}

func newTestOrchestrator(t *testing.T) (*Orchestrator, *recorder, *Ledger) {
	t.Helper()
	l, err := OpenLedger(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return NewOrchestrator(l, map[string]Attachment{"fake": rec}, log), rec, l
}

var pod = PodRef{Namespace: "default", Name: "web", UID: "uid-1"}

func TestAddRunsInOrderAndRecordsEverything(t *testing.T) {
	o, rec, l := newTestOrchestrator(t)
	out, err := o.Add(context.Background(), pod, "c1", "/run/netns/x", specs("default", "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"add default/eth0", "add a/net1", "add b/net2"}
	if got := rec.log(); !reflect.DeepEqual(got, want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
	if len(out) != 3 || out[0].Network != "default" || out[2].Result == nil {
		t.Fatalf("outcomes = %+v", out)
	}
	r, ok, err := l.Load("c1")
	if err != nil || !ok {
		t.Fatalf("load record: ok=%v err=%v", ok, err)
	}
	for _, e := range r.Attachments {
		if e.State != StateAdded || len(e.Result) == 0 {
			t.Errorf("entry %s: state %s result %q", e.Network, e.State, e.Result)
		}
	}
	if r.Pod != pod || r.Netns != "/run/netns/x" {
		t.Errorf("record pod/netns = %v %s", r.Pod, r.Netns)
	}
}

func TestAddFailureRollsBackInReverseAndLeavesNothing(t *testing.T) {
	for failAt := 0; failAt < 4; failAt++ {
		t.Run(fmt.Sprintf("fail at %d", failAt), func(t *testing.T) {
			o, rec, l := newTestOrchestrator(t)
			sp := specs("default", "a", "b", "c")
			cause := errors.New("boom")
			rec.failOn[fmt.Sprintf("add %s/%s", sp[failAt].Network, sp[failAt].Ifname)] = cause
			_, err := o.Add(context.Background(), pod, "c1", "/ns", sp)
			var ae *AttachError
			if !errors.As(err, &ae) || !errors.Is(err, cause) {
				t.Fatalf("err = %v, want *AttachError wrapping the cause", err)
			}
			if ae.Network != sp[failAt].Network || ae.Ifname != sp[failAt].Ifname || ae.Rollback != nil {
				t.Fatalf("AttachError = %+v", ae)
			}
			if !strings.Contains(err.Error(), sp[failAt].Ifname) || !strings.Contains(err.Error(), sp[failAt].Network) {
				t.Errorf("error %q does not name the network and interface", err)
			}
			var want []string
			for i := 0; i <= failAt; i++ {
				want = append(want, fmt.Sprintf("add %s/%s", sp[i].Network, sp[i].Ifname))
			}
			for i := failAt; i >= 0; i-- {
				want = append(want, fmt.Sprintf("del %s/%s", sp[i].Network, sp[i].Ifname))
			}
			if got := rec.log(); !reflect.DeepEqual(got, want) {
				t.Fatalf("calls = %v\nwant    %v", got, want)
			}
			if len(rec.held) != 0 {
				t.Errorf("still held after rollback: %v", rec.held)
			}
			assertLedgerEmpty(t, l)
		})
	}
}

func TestRollbackFailureKeepsWhatCouldNotBeReleased(t *testing.T) {
	o, rec, l := newTestOrchestrator(t)
	rec.failOn["add b/net2"] = errors.New("boom")
	rec.failOn["del a/net1"] = errors.New("stuck")
	_, err := o.Add(context.Background(), pod, "c1", "/ns", specs("default", "a", "b"))
	var ae *AttachError
	if !errors.As(err, &ae) || ae.Rollback == nil {
		t.Fatalf("err = %v, want an AttachError with a rollback failure", err)
	}
	r, ok, _ := l.Load("c1")
	if !ok || len(r.Attachments) != 1 || r.Attachments[0].Network != "a" {
		t.Fatalf("ledger keeps %+v, want only network a", r.Attachments)
	}
	// The next DEL finishes the job.
	delete(rec.failOn, "del a/net1")
	if err := o.Del(context.Background(), "c1", "", nil); err != nil {
		t.Fatal(err)
	}
	assertLedgerEmpty(t, l)
	if len(rec.held) != 0 {
		t.Errorf("still held: %v", rec.held)
	}
}

func TestDelIsIdempotentAndKeepsGoingPastFailures(t *testing.T) {
	o, rec, l := newTestOrchestrator(t)
	ctx := context.Background()
	if _, err := o.Add(ctx, pod, "c1", "/ns", specs("default", "a", "b")); err != nil {
		t.Fatal(err)
	}
	rec.failOn["del a/net1"] = errors.New("stuck")
	if err := o.Del(ctx, "c1", "/ns", nil); err == nil {
		t.Fatal("DEL succeeded although one attachment could not be released")
	}
	if rec.held["c1/eth0"] || rec.held["c1/net2"] {
		t.Errorf("DEL stopped at the first failure: held %v", rec.held)
	}
	delete(rec.failOn, "del a/net1")
	for i := 0; i < 2; i++ {
		if err := o.Del(ctx, "c1", "/ns", nil); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
	}
	assertLedgerEmpty(t, l)
	if len(rec.held) != 0 {
		t.Errorf("still held: %v", rec.held)
	}
}

func TestDelWithoutRecordUsesFallback(t *testing.T) {
	o, rec, _ := newTestOrchestrator(t)
	called := false
	err := o.Del(context.Background(), "c9", "/ns", func() ([]Spec, PodRef) {
		called = true
		return specs("default", "a"), pod
	})
	if err != nil || !called {
		t.Fatalf("err=%v fallback called=%v", err, called)
	}
	want := []string{"del a/net1", "del default/eth0"}
	if got := rec.log(); !reflect.DeepEqual(got, want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
}

func TestAddReleasesAnEarlierRecordFirst(t *testing.T) {
	o, rec, _ := newTestOrchestrator(t)
	ctx := context.Background()
	if _, err := o.Add(ctx, pod, "c1", "/ns", specs("default", "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Add(ctx, pod, "c1", "/ns", specs("default")); err != nil {
		t.Fatal(err)
	}
	want := []string{"add default/eth0", "add a/net1", "del a/net1", "del default/eth0", "add default/eth0"}
	if got := rec.log(); !reflect.DeepEqual(got, want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
}

func TestCheckChecksEveryAttachment(t *testing.T) {
	o, rec, _ := newTestOrchestrator(t)
	ctx := context.Background()
	if err := o.Check(ctx, "c1", "/ns"); err == nil {
		t.Fatal("CHECK of an unknown container succeeded")
	}
	if _, err := o.Add(ctx, pod, "c1", "/ns", specs("default", "a", "b")); err != nil {
		t.Fatal(err)
	}
	if err := o.Check(ctx, "c1", "/ns"); err != nil {
		t.Fatal(err)
	}
	got := rec.log()[3:]
	want := []string{"check default/eth0", "check a/net1", "check b/net2"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
	rec.failOn["check b/net2"] = errors.New("interface gone")
	if err := o.Check(ctx, "c1", "/ns"); err == nil || !strings.Contains(err.Error(), "net2") {
		t.Fatalf("CHECK err = %v, want one naming net2", err)
	}
}

func TestGCReleasesWhatTheRuntimeNoLongerLists(t *testing.T) {
	o, rec, l := newTestOrchestrator(t)
	ctx := context.Background()
	for _, id := range []ContainerID{"keep", "stale"} {
		if _, err := o.Add(ctx, pod, id, "/ns", specs("default", "a")); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.GC(ctx, map[ContainerID]bool{"keep": true}, specs("default", "a", "b")); err != nil {
		t.Fatal(err)
	}
	if rec.held["stale/eth0"] || rec.held["stale/net1"] || !rec.held["keep/eth0"] || !rec.held["keep/net1"] {
		t.Fatalf("held after GC: %v", rec.held)
	}
	recs, _ := l.List()
	if len(recs) != 1 || recs[0].ContainerID != "keep" {
		t.Fatalf("ledger after GC: %+v", recs)
	}
	// The delegate GC saw the known networks (3 given + 2 of the stale record) and the 2
	// live attachments of "keep".
	if len(rec.gc) != 1 || rec.gc[0] != [2]int{5, 2} {
		t.Fatalf("delegate GC calls = %v", rec.gc)
	}
}

func TestConcurrentContainersAttachAndDetachCleanly(t *testing.T) {
	o, _, l := newTestOrchestrator(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := ContainerID(fmt.Sprintf("c%d", i))
			if _, err := o.Add(context.Background(), pod, id, "/ns", specs("default", "a")); err != nil {
				errs <- err
				return
			}
			errs <- o.Del(context.Background(), id, "/ns", nil)
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	assertLedgerEmpty(t, l)
	if len(o.busy) != 0 {
		t.Errorf("container locks leaked: %d", len(o.busy))
	}
}

func TestUnknownKindIsRejectedBeforeAnythingRuns(t *testing.T) {
	o, rec, l := newTestOrchestrator(t)
	sp := specs("default", "a")
	sp[1].Kind = "nope"
	if _, err := o.Add(context.Background(), pod, "c1", "/ns", sp); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if len(rec.log()) != 0 {
		t.Fatalf("calls made: %v", rec.log())
	}
	assertLedgerEmpty(t, l)
}

func assertLedgerEmpty(t *testing.T, l *Ledger) {
	t.Helper()
	des, err := os.ReadDir(l.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if de.Name() != ".lock" {
			t.Errorf("ledger not empty: %s", filepath.Join(l.Dir(), de.Name()))
		}
	}
}

func TestDelAfterACrashMidAddReleasesEveryAttachment(t *testing.T) {
	o, rec, l := newTestOrchestrator(t)
	// What Add leaves on disk if loomd dies while the second attachment runs.
	r := Record{ContainerID: "c1", Netns: "/ns", Pod: pod}
	for _, s := range specs("default", "a", "b") {
		r.Attachments = append(r.Attachments, Entry{Spec: s, State: StateAdding})
	}
	if err := l.Save(r); err != nil {
		t.Fatal(err)
	}
	if err := o.Del(context.Background(), "c1", "", nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"del b/net2", "del a/net1", "del default/eth0"}
	if got := rec.log(); !reflect.DeepEqual(got, want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
	assertLedgerEmpty(t, l)
}

// A commit step that fails after every attachment is made takes all of them back: Add is the
// one owner of an ADD's rollback. Steps run in order, each seeing every outcome, and a step
// after a failed one never runs.
func TestCommitStepFailureRollsEverythingBack(t *testing.T) {
	o, rec, l := newTestOrchestrator(t)
	var ran []string
	first := func(_ context.Context, outcomes []Outcome) error {
		ran = append(ran, fmt.Sprintf("first saw %d", len(outcomes)))
		return nil
	}
	failing := func(context.Context, []Outcome) error {
		ran = append(ran, "failing")
		return errors.New("rules not written")
	}
	never := func(context.Context, []Outcome) error {
		ran = append(ran, "never")
		return nil
	}
	_, err := o.Add(context.Background(), pod, "c1", "/ns", specs("default", "a", "b"), first, failing, never)
	var ce *CommitError
	if !errors.As(err, &ce) || ce.Rollback != nil || ce.Err.Error() != "rules not written" {
		t.Fatalf("err = %v, want a CommitError with a complete rollback", err)
	}
	if want := []string{"first saw 3", "failing"}; !slices.Equal(ran, want) {
		t.Errorf("steps ran %v, want %v", ran, want)
	}
	if len(rec.held) != 0 {
		t.Errorf("still held after a failed commit: %v", rec.held)
	}
	assertLedgerEmpty(t, l)
}
