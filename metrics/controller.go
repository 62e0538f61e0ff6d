package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// The decisions of loom_webhook_decisions_total.
const (
	DecisionAllowed = "allowed"
	DecisionDenied  = "denied"
	// DecisionError: the webhook could not decide (its caches are not synced, the request
	// is not an AdmissionReview) and refused.
	DecisionError = "error"
)

// The webhook's kinds, as the kind label names them.
const (
	KindPod    = "Pod"
	KindNAD    = "NetworkAttachmentDefinition"
	KindTenant = "Tenant"
)

// webhookBuckets cover a decision from cached listers (well under a millisecond) to one that
// waits for a cache to learn of a namespace (seconds).
var webhookBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// Controller holds loom-controller's metrics.
type Controller struct {
	decisions          *prometheus.CounterVec   // kind, decision
	reviewDuration     *prometheus.HistogramVec // kind
	reclaimedBlocks    prometheus.Counter
	reclaimedAddresses prometheus.Counter
	reclaimErrors      prometheus.Counter
	statusWrites       *prometheus.CounterVec // result
	leader             prometheus.Gauge
}

// NewController registers loom-controller's metrics with reg.
func NewController(reg prometheus.Registerer) *Controller {
	c := &Controller{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_webhook_decisions_total",
			Help: "Admission reviews the webhook answered, by kind (Pod, NetworkAttachmentDefinition, Tenant) and decision (allowed, denied, error: could not decide, and refused).",
		}, []string{"kind", "decision"}),
		reviewDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "loom_webhook_request_duration_seconds",
			Help:    "Time the webhook took to answer an admission review, by kind.",
			Buckets: webhookBuckets,
		}, []string{"kind"}),
		reclaimedBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loom_ipam_reclaimed_blocks_total",
			Help: "IPBlocks of deleted nodes the leader deleted, returning their addresses to the pool.",
		}),
		reclaimedAddresses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loom_ipam_reclaimed_addresses_total",
			Help: "Allocations of deleted pods the leader released from the blocks of live nodes.",
		}),
		reclaimErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loom_ipam_reclaim_errors_total",
			Help: "Reclaim passes of the leader that failed to delete a block or release an allocation (retried at the next pass).",
		}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_tenant_status_writes_total",
			Help: "Writes of a Tenant's status by the leader, by result (ok, conflict: retried with the newer object, error).",
		}, []string{"result"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "loom_controller_leader",
			Help: "1 while this replica leads (reclaims addresses, writes Tenant status), else 0.",
		}),
	}
	reg.MustRegister(c.decisions, c.reviewDuration, c.reclaimedBlocks, c.reclaimedAddresses, c.reclaimErrors, c.statusWrites, c.leader)
	for _, kind := range []string{KindPod, KindNAD, KindTenant} {
		for _, d := range []string{DecisionAllowed, DecisionDenied, DecisionError} {
			c.decisions.WithLabelValues(kind, d)
		}
		c.reviewDuration.WithLabelValues(kind)
	}
	for _, r := range []string{"ok", "conflict", "error"} {
		c.statusWrites.WithLabelValues(r)
	}
	return c
}

// WebhookDecision counts one admission review of kind, answered with decision after took.
func (c *Controller) WebhookDecision(kind, decision string, took time.Duration) {
	c.decisions.WithLabelValues(kind, decision).Inc()
	c.reviewDuration.WithLabelValues(kind).Observe(took.Seconds())
}

// Reclaimed counts one reclaim pass: the blocks it deleted, the allocations it released and
// whether it failed at some of them.
func (c *Controller) Reclaimed(blocks, addresses int, err error) {
	c.reclaimedBlocks.Add(float64(blocks))
	c.reclaimedAddresses.Add(float64(addresses))
	if err != nil {
		c.reclaimErrors.Inc()
	}
}

// TenantStatusWritten counts one write of a Tenant's status that ended with err.
func (c *Controller) TenantStatusWritten(err error) {
	result := "ok"
	switch {
	case apierrors.IsConflict(err):
		result = "conflict"
	case err != nil:
		result = "error"
	}
	c.statusWrites.WithLabelValues(result).Inc()
}

// SetLeader records whether this replica leads.
func (c *Controller) SetLeader(leading bool) {
	v := 0.0
	if leading {
		v = 1
	}
	c.leader.Set(v)
}
