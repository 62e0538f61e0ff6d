package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/loom-cni/loom/cniserver"
	"github.com/loom-cni/loom/delegate"
)

// handlerFunc is a cniserver.Handler made of a function.
type handlerFunc func(ctx context.Context, req *cniserver.Request) ([]byte, error)

func (f handlerFunc) ServeCNI(ctx context.Context, req *cniserver.Request) ([]byte, error) {
	return f(ctx, req)
}

func TestCNIHandlerCountsCalls(t *testing.T) {
	m := NewCNI(prometheus.NewRegistry())
	var inFlight float64
	h := m.Handler(handlerFunc(func(_ context.Context, req *cniserver.Request) ([]byte, error) {
		inFlight = testutil.ToFloat64(m.op(req.Command).inFlight)
		switch req.Args {
		case "user":
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "pod p may not use network n", "")
		case "loom":
			return nil, errors.New("ledger unreadable")
		}
		return []byte("{}"), nil
	}))
	for _, req := range []cniserver.Request{
		{Command: "ADD"}, {Command: "ADD", Args: "user"}, {Command: "DEL"}, {Command: "CHECK", Args: "loom"}, {Command: "VERSION"},
	} {
		if _, err := h.ServeCNI(context.Background(), &req); (err != nil) != (req.Args != "") {
			t.Errorf("%s %s: error %v", req.Command, req.Args, err)
		}
		if inFlight != 1 {
			t.Errorf("%s: %v calls in flight during the call, want 1", req.Command, inFlight)
		}
	}
	for op, want := range map[string]float64{"ADD": 2, "DEL": 1, "CHECK": 1, "GC": 0, "STATUS": 0, "other": 1} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(op)); got != want {
			t.Errorf("requests %s: got %v, want %v", op, got, want)
		}
		if got := testutil.ToFloat64(m.inFlight.WithLabelValues(op)); got != 0 {
			t.Errorf("in flight %s after the calls: %v", op, got)
		}
	}
	if got := testutil.CollectAndCount(m.errors); got != 2 {
		t.Errorf("got %d error series, want 2", got)
	}
	if got := testutil.ToFloat64(m.errors.WithLabelValues("ADD", "7")); got != 1 {
		t.Errorf("ADD errors with code 7: %v", got)
	}
	if got := testutil.ToFloat64(m.errors.WithLabelValues("CHECK", "999")); got != 1 {
		t.Errorf("CHECK errors with code 999 (not a CNI error): %v", got)
	}
	if got := testutil.CollectAndCount(m.duration); got != len(operations) {
		t.Errorf("got %d duration series, want one per operation", got)
	}
}

// fakeAttachment attaches nothing and fails when the network is named "bad".
type fakeAttachment struct{}

func (fakeAttachment) Add(_ context.Context, c delegate.Call) (types.Result, error) {
	if c.Network == "bad" {
		return nil, errors.New("no such master")
	}
	return &current.Result{CNIVersion: "1.1.0"}, nil
}
func (fakeAttachment) Check(context.Context, delegate.Call, types.Result) error { return nil }
func (fakeAttachment) Del(context.Context, delegate.Call, types.Result) error   { return nil }

// TestOrchestratorCallsAndLedger runs a real orchestrator and ledger: the calls it makes are
// counted by network type and plugin, and the attachments collector follows the ledger.
func TestOrchestratorCallsAndLedger(t *testing.T) {
	ledger, err := delegate.OpenLedger(filepath.Join(t.TempDir(), "ledger"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	orch := delegate.NewOrchestrator(ledger, map[string]delegate.Attachment{"loom-primary": fakeAttachment{}, delegate.KindCNI: fakeAttachment{}},
		slog.New(slog.DiscardHandler))
	m := NewCNI(prometheus.NewRegistry())
	orch.SetObserver(m)
	held := NewAttachmentsCollector(ledger)

	pod := delegate.PodRef{Namespace: "ns", Name: "p", UID: "uid"}
	specs := []delegate.Spec{
		{Network: "loom-default", Ifname: "eth0", Kind: "loom-primary", Plugin: "loom-primary"},
		// A spec from a record written before Plugin existed: the type comes from Config.
		{Network: "ns/mv", Ifname: "net1", Kind: delegate.KindCNI, Config: []byte(`{"name":"mv","plugins":[{"type":"macvlan"}]}`)},
	}
	if _, err = orch.Add(context.Background(), pod, "c1", "/ns", specs); err != nil {
		t.Fatal(err)
	}
	bad := append(specs[:1:1], delegate.Spec{Network: "bad", Ifname: "net1", Kind: delegate.KindCNI, Plugin: "macvlan"})
	if _, err = orch.Add(context.Background(), pod, "c2", "/ns2", bad); err == nil {
		t.Fatal("ADD of a network that fails succeeded")
	}
	compareHeld(t, held, `
		loom_attachments{network_type="loom-primary",plugin="loom-primary",state="added"} 1
		loom_attachments{network_type="cni",plugin="macvlan",state="added"} 1
		loom_ledger_containers 1
	`)

	if err = orch.Del(context.Background(), "c1", "/ns", nil); err != nil {
		t.Fatal(err)
	}
	compareHeld(t, held, `
		loom_attachments{network_type="loom-primary",plugin="loom-primary",state="added"} 0
		loom_attachments{network_type="cni",plugin="macvlan",state="added"} 0
		loom_ledger_containers 0
	`)

	// c1: ADD loom, ADD macvlan, DEL both. c2: ADD loom, ADD bad (fails), rollback DEL both.
	for _, tc := range []struct {
		op, kind, plugin string
		calls, errors    float64
	}{
		{"ADD", "loom-primary", "loom-primary", 2, 0},
		{"ADD", delegate.KindCNI, "macvlan", 2, 1},
		{"DEL", "loom-primary", "loom-primary", 2, 0},
		{"DEL", delegate.KindCNI, "macvlan", 2, 0},
	} {
		if got := testutil.ToFloat64(m.calls.WithLabelValues(tc.op, tc.kind, tc.plugin)); got != tc.calls {
			t.Errorf("%s %s/%s calls: got %v, want %v", tc.op, tc.kind, tc.plugin, got, tc.calls)
		}
		if got := testutil.ToFloat64(m.callErrors.WithLabelValues(tc.op, tc.kind, tc.plugin)); got != tc.errors {
			t.Errorf("%s %s/%s errors: got %v, want %v", tc.op, tc.kind, tc.plugin, got, tc.errors)
		}
	}
	if got := testutil.CollectAndCount(m.callDuration); got != 4 {
		t.Errorf("got %d delegate duration series, want 4", got)
	}
}

// compareHeld compares what the attachments collector reports with want, sample lines.
func compareHeld(t *testing.T, c prometheus.Collector, want string) {
	t.Helper()
	const head = `# HELP loom_attachments Pod interfaces the node's attachment ledger holds, by network type (attachment kind), plugin type and state: added (attached), adding (an ADD in progress, or left for the next DEL or GC to release).
# TYPE loom_attachments gauge
# HELP loom_ledger_containers Pod sandboxes the node's attachment ledger holds a record of.
# TYPE loom_ledger_containers gauge
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(head+dedent(want))); err != nil {
		t.Error(err)
	}
}

func dedent(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		b.WriteString(strings.TrimSpace(line) + "\n")
	}
	return b.String()
}

func TestPluginLabelIsBounded(t *testing.T) {
	m := NewCNI(prometheus.NewRegistry())
	for i := range maxPlugins + 10 {
		m.AttachmentCalled("ADD", delegate.KindCNI, fmt.Sprintf("typo-%d", i), time.Millisecond, nil)
	}
	if got := testutil.CollectAndCount(m.calls); got != maxPlugins+1 {
		t.Errorf("got %d series, want %d plugins and %q", got, maxPlugins, pluginOther)
	}
	if got := testutil.ToFloat64(m.calls.WithLabelValues("ADD", delegate.KindCNI, pluginOther)); got != 10 {
		t.Errorf("calls counted as %q: %v, want 10", pluginOther, got)
	}
	// A plugin seen before the limit keeps its own series.
	m.AttachmentCalled("DEL", delegate.KindCNI, "typo-0", time.Millisecond, nil)
	if got := testutil.ToFloat64(m.calls.WithLabelValues("DEL", delegate.KindCNI, "typo-0")); got != 1 {
		t.Errorf("DEL of typo-0: %v", got)
	}
}

// TestCNIHotPathAllocatesNothing: counting a call must not add allocations to the ADD path.
func TestCNIHotPathAllocatesNothing(t *testing.T) {
	m := NewCNI(prometheus.NewRegistry())
	h := m.Handler(handlerFunc(func(context.Context, *cniserver.Request) ([]byte, error) { return nil, nil }))
	req := &cniserver.Request{Command: "ADD"}
	ctx := context.Background()
	m.AttachmentCalled("ADD", delegate.KindCNI, "macvlan", time.Millisecond, nil)
	if n := testing.AllocsPerRun(100, func() { h.ServeCNI(ctx, req) }); n != 0 {
		t.Errorf("ServeCNI allocates %v times a call", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		m.AttachmentCalled("ADD", delegate.KindCNI, "macvlan", time.Millisecond, nil)
	}); n != 0 {
		t.Errorf("AttachmentCalled allocates %v times a call", n)
	}
}
