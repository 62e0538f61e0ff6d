package metrics

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestController(t *testing.T) {
	m := NewController(prometheus.NewRegistry())
	// Every kind and decision is there from the start, so that rate() sees the first one.
	if got := testutil.CollectAndCount(m.decisions); got != 9 {
		t.Errorf("got %d decision series before any review, want 9", got)
	}
	m.WebhookDecision(KindPod, DecisionAllowed, time.Millisecond)
	m.WebhookDecision(KindPod, DecisionDenied, time.Millisecond)
	m.WebhookDecision(KindPod, DecisionAllowed, 2*time.Millisecond)
	m.WebhookDecision(KindTenant, DecisionError, time.Millisecond)
	for _, tc := range []struct {
		kind, decision string
		want           float64
	}{
		{KindPod, DecisionAllowed, 2}, {KindPod, DecisionDenied, 1}, {KindTenant, DecisionError, 1}, {KindNAD, DecisionAllowed, 0},
	} {
		if got := testutil.ToFloat64(m.decisions.WithLabelValues(tc.kind, tc.decision)); got != tc.want {
			t.Errorf("%s %s: got %v, want %v", tc.kind, tc.decision, got, tc.want)
		}
	}

	m.Reclaimed(2, 5, nil)
	m.Reclaimed(0, 1, errors.New("reclaim block b1: the server is unavailable"))
	if b, a, e := testutil.ToFloat64(m.reclaimedBlocks), testutil.ToFloat64(m.reclaimedAddresses), testutil.ToFloat64(m.reclaimErrors); b != 2 || a != 6 || e != 1 {
		t.Errorf("reclaimed %v blocks, %v addresses, %v errors; want 2, 6, 1", b, a, e)
	}

	conflict := apierrors.NewConflict(schema.GroupResource{Group: "loom.dev", Resource: "tenants"}, "a", errors.New("changed"))
	for _, err := range []error{nil, nil, conflict, errors.New("timeout")} {
		m.TenantStatusWritten(err)
	}
	for result, want := range map[string]float64{"ok": 2, "conflict": 1, "error": 1} {
		if got := testutil.ToFloat64(m.statusWrites.WithLabelValues(result)); got != want {
			t.Errorf("status writes %s: got %v, want %v", result, got, want)
		}
	}

	if testutil.ToFloat64(m.leader) != 0 {
		t.Error("a new controller leads")
	}
	m.SetLeader(true)
	if testutil.ToFloat64(m.leader) != 1 {
		t.Error("leader gauge not 1 while leading")
	}
	m.SetLeader(false)
	if testutil.ToFloat64(m.leader) != 0 {
		t.Error("leader gauge not 0 after leading")
	}
}
