package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/loom-cni/loom/e2e/sim"
)

// loomdState is what only the node's loomd knows, read from its /metrics (docs/metrics.md):
// the policy engine's last sync, its BGP sessions and its VFs.
type loomdState struct {
	PolicyPods      int       `json:"policyPods"`
	PolicyRules     int       `json:"policyRules"`
	LastSyncFailed  bool      `json:"lastSyncFailed"`
	LastSyncSeconds float64   `json:"lastSyncSeconds"`
	SyncErrors      int       `json:"syncErrors"`
	Repairs         int       `json:"repairs"`
	BGPSessions     []bgpView `json:"bgpSessions,omitempty"`
	VFs             []vfCount `json:"vfs,omitempty"`
}

type bgpView struct {
	Peer     string `json:"peer"`
	State    string `json:"state"`
	Received int    `json:"received"`
}

type vfCount struct {
	Pool  string `json:"pool"`
	State string `json:"state"`
	Count int    `json:"count"`
}

// simLoomdMetrics reads the /metrics of the loomd of a simulated node, from inside the node.
func simLoomdMetrics(ctx context.Context, c *sim.Cluster, node string) (string, error) {
	return c.NodeExec(ctx, node, "curl", "-sf", "--max-time", "5", "http://127.0.0.1:9465/metrics")
}

// parseLoomdState reads loomdState from loomd's metrics in the Prometheus text format.
func parseLoomdState(text string) (loomdState, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return loomdState{}, fmt.Errorf("read loomd's metrics: %w", err)
	}
	value := func(m *dto.Metric) float64 {
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		}
		return 0
	}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	sum := func(name string) float64 {
		var s float64
		if f, ok := families[name]; ok {
			for _, m := range f.GetMetric() {
				s += value(m)
			}
		}
		return s
	}
	st := loomdState{
		PolicyPods:      int(sum("loom_policy_pods")),
		PolicyRules:     int(sum("loom_policy_rules")),
		LastSyncFailed:  sum("loom_policy_last_sync_failed") > 0,
		LastSyncSeconds: sum("loom_policy_last_sync_duration_seconds"),
		SyncErrors:      int(sum("loom_policy_sync_errors_total")),
		Repairs:         int(sum("loom_policy_repairs_total")),
	}
	received := map[string]int{}
	if f, ok := families["loom_bgp_received_routes"]; ok {
		for _, m := range f.GetMetric() {
			received[label(m, "peer")] = int(value(m))
		}
	}
	if f, ok := families["loom_bgp_sessions"]; ok {
		for _, m := range f.GetMetric() {
			if value(m) > 0 {
				peer := label(m, "peer")
				st.BGPSessions = append(st.BGPSessions, bgpView{Peer: peer, State: label(m, "state"), Received: received[peer]})
			}
		}
	}
	if f, ok := families["loom_sriov_vfs"]; ok {
		for _, m := range f.GetMetric() {
			st.VFs = append(st.VFs, vfCount{Pool: label(m, "pool"), State: label(m, "state"), Count: int(value(m))})
		}
	}
	slices.SortFunc(st.BGPSessions, func(a, b bgpView) int { return strings.Compare(a.Peer, b.Peer) })
	slices.SortFunc(st.VFs, func(a, b vfCount) int { return strings.Compare(a.Pool+" "+a.State, b.Pool+" "+b.State) })
	return st, nil
}

// printLoomdState prints what loomd said of itself, or why it was not asked.
func printLoomdState(w io.Writer, st *loomdState, why string) {
	fmt.Fprintf(w, "\nloomd\n")
	if st == nil {
		fmt.Fprintf(w, "  (not read: %s)\n", why)
		return
	}
	sync := "ok"
	if st.LastSyncFailed {
		sync = "FAILED (retried every second)"
	}
	fmt.Fprintf(w, "  policy: %d pods, %d rules; last sync %s in %.1f ms; %d sync errors, %d repairs\n",
		st.PolicyPods, st.PolicyRules, sync, st.LastSyncSeconds*1000, st.SyncErrors, st.Repairs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(st.BGPSessions) > 0 {
		fmt.Fprintln(tw, "  BGP PEER\tSTATE\tRECEIVED")
		for _, s := range st.BGPSessions {
			fmt.Fprintf(tw, "  %s\t%s\t%d\n", s.Peer, s.State, s.Received)
		}
	}
	if len(st.VFs) > 0 {
		fmt.Fprintln(tw, "  SR-IOV POOL\tSTATE\tVFS")
		for _, v := range st.VFs {
			fmt.Fprintf(tw, "  %s\t%s\t%d\n", v.Pool, v.State, v.Count)
		}
	}
	tw.Flush()
}
