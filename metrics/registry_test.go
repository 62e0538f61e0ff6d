package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/loom-cni/loom/cniserver"
	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/fabric/bgp"
	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/vxlan"
	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/sriov"
)

// everything registers every metric of loomd and loom-controller in reg, each with a value.
func everything(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	cni := NewCNI(reg)
	cni.AttachmentCalled(delegate.OpAdd, delegate.KindCNI, "macvlan", time.Millisecond, errors.New("no master"))
	if _, err := cni.Handler(handlerFunc(func(context.Context, *cniserver.Request) ([]byte, error) {
		return nil, errors.New("failed")
	})).ServeCNI(context.Background(), &cniserver.Request{Command: "ADD"}); err == nil {
		t.Fatal("the failing handler did not fail")
	}
	ctl := NewController(reg)
	ctl.Reclaimed(1, 1, nil)
	ledger, err := delegate.OpenLedger(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err = ledger.Save(delegate.Record{ContainerID: "c", Attachments: []delegate.Entry{{Spec: delegate.Spec{Kind: "loom-primary", Plugin: "loom-primary"}, State: delegate.StateAdded}}}); err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(
		NewAttachmentsCollector(ledger),
		NewIPAMCollector(func() []ipam.PoolUsage {
			return []ipam.PoolUsage{{Pool: "default", Blocks: 1, Addresses: 64, InUse: 3}}
		}),
		NewBGPCollector(func(context.Context) ([]bgp.PeerState, error) {
			return []bgp.PeerState{{Address: netip.MustParseAddr("192.0.2.1"), State: "established", Received: 4, Accepted: 4}}, nil
		}),
		NewVXLANCollector(func() (vxlan.Status, bool) { return vxlan.Status{Peers: 1, Routes: 1}, true }),
		NewPolicyCollector(func() policy.Stats { return policy.Stats{Syncs: 1, LastSyncEnd: time.Now(), HostRules: 3} }),
		NewSRIOVCollector(func() map[sriov.ResourceName][]sriov.VF {
			return map[sriov.ResourceName][]sriov.VF{"loom.dev/net_a": {{Address: "0000:3b:02.0", LinkUp: true}}}
		}, func() ([]string, error) { return nil, nil }),
	)
}

// TestEveryMetricIsDocumented gathers every metric Loom defines, checks their names against
// Prometheus's conventions and that docs/metrics.md describes each.
func TestEveryMetricIsDocumented(t *testing.T) {
	reg := NewRegistry()
	everything(t, reg)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "loom_") {
			t.Errorf("lint %s: %s", p.Metric, p.Text)
		}
	}
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "loom_") {
			continue
		}
		n++
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/metrics.md does not describe %s", name)
		}
	}
	if n < 35 {
		t.Errorf("gathered %d of Loom's metrics, fewer than it defines", n)
	}
}

func TestHandler(t *testing.T) {
	reg := NewRegistry()
	cni := NewCNI(reg)
	if _, err := cni.Handler(handlerFunc(func(context.Context, *cniserver.Request) ([]byte, error) { return nil, nil })).
		ServeCNI(context.Background(), &cniserver.Request{Command: "ADD"}); err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(
		NewIPAMCollector(func() []ipam.PoolUsage {
			return []ipam.PoolUsage{{Pool: "default", Blocks: 1, Addresses: 64, InUse: 3}}
		}),
		NewAttachmentsCollector(&brokenLedger{}),
	)
	srv := httptest.NewServer(Handler(reg, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, body)
	}
	// The Go and process collectors, and Loom's metrics, are served even though one
	// collector failed.
	for _, want := range []string{"go_goroutines ", "process_open_fds ", `loom_cni_requests_total{operation="ADD"} 1`, "loom_ipam_blocks"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("the metrics do not hold %q", want)
		}
	}
}
