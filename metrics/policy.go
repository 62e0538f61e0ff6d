package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-cni/loom/policy"
)

// policyCollector reports what the node's policy engine enforces and how its syncs go.
type policyCollector struct {
	stats func() policy.Stats

	rules, pods, podTables           *prometheus.Desc
	syncs, failures, repairs         *prometheus.Desc
	lastFailed, lastSync, lastSyncAt *prometheus.Desc
}

// NewPolicyCollector reports stats ((*policy.Engine).Stats).
func NewPolicyCollector(stats func() policy.Stats) prometheus.Collector {
	return &policyCollector{
		stats: stats,
		rules: prometheus.NewDesc("loom_policy_rules",
			"nftables rules the policy engine last applied, by table: node (the node's table, primary network) or pod (the tables in pods' namespaces, secondary networks).",
			[]string{"table"}, nil),
		pods: prometheus.NewDesc("loom_policy_pods",
			"Pods of this node the policy engine enforces rules for.", nil, nil),
		podTables: prometheus.NewDesc("loom_policy_pod_tables",
			"Pods of this node with a rules table in their own network namespace (secondary interfaces).", nil, nil),
		syncs: prometheus.NewDesc("loom_policy_sync_duration_seconds",
			"Time the policy engine's syncs (compile, render, apply every changed table) took; one per pod ADD or DEL and per change of pods, policies or tenants.", nil, nil),
		failures: prometheus.NewDesc("loom_policy_sync_errors_total",
			"Syncs that left a table unwritten (retried a second later).", nil, nil),
		repairs: prometheus.NewDesc("loom_policy_repairs_total",
			"Tables rewritten because the kernel's rules had been changed outside loomd.", nil, nil),
		lastFailed: prometheus.NewDesc("loom_policy_last_sync_failed",
			"1 when the last sync left a table unwritten, else 0.", nil, nil),
		lastSync: prometheus.NewDesc("loom_policy_last_sync_duration_seconds",
			"Time the last sync took.", nil, nil),
		lastSyncAt: prometheus.NewDesc("loom_policy_last_sync_timestamp_seconds",
			"When the last sync ended, in seconds since the Unix epoch.", nil, nil),
	}
}

func (c *policyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rules, c.pods, c.podTables, c.syncs, c.failures, c.repairs, c.lastFailed, c.lastSync, c.lastSyncAt} {
		ch <- d
	}
}

func (c *policyCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.rules, float64(st.HostRules), "node")
	gauge(c.rules, float64(st.PodRules), "pod")
	gauge(c.pods, float64(st.LocalPods))
	gauge(c.podTables, float64(st.PodTables))
	ch <- prometheus.MustNewConstSummary(c.syncs, uint64(st.Syncs), st.SyncTime.Seconds(), nil)
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(st.Failures))
	ch <- prometheus.MustNewConstMetric(c.repairs, prometheus.CounterValue, float64(st.Repairs))
	if st.Syncs == 0 {
		return
	}
	failed := 0.0
	if st.LastError != "" {
		failed = 1
	}
	gauge(c.lastFailed, failed)
	gauge(c.lastSync, st.LastSync.Seconds())
	gauge(c.lastSyncAt, float64(st.LastSyncEnd.UnixNano())/1e9)
}
