package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-cni/loom/delegate"
)

// Ledger is what the attachments collector reads: the node's attachment ledger
// (*delegate.Ledger).
type Ledger interface {
	List() ([]delegate.Record, error)
	Generation() uint64
}

// attachmentKey is one series of loom_attachments.
type attachmentKey struct {
	kind, plugin string
	state        delegate.State
}

// attachments reports what the node's ledger holds. It reads the ledger, one file per
// container, only when the ledger's generation changed since the last scrape.
type attachments struct {
	ledger  Ledger
	held    *prometheus.Desc
	records *prometheus.Desc

	mu     sync.Mutex // serialises scrapes and guards the summary below
	valid  bool
	gen    uint64
	counts map[attachmentKey]int
	nrecs  int
}

// NewAttachmentsCollector reports the attachments the node's ledger holds.
func NewAttachmentsCollector(l Ledger) prometheus.Collector {
	return &attachments{
		ledger: l,
		held: prometheus.NewDesc("loom_attachments",
			"Pod interfaces the node's attachment ledger holds, by network type (attachment kind), plugin type and state: added (attached), adding (an ADD in progress, or left for the next DEL or GC to release).",
			[]string{"network_type", "plugin", "state"}, nil),
		records: prometheus.NewDesc("loom_ledger_containers",
			"Pod sandboxes the node's attachment ledger holds a record of.", nil, nil),
	}
}

func (a *attachments) Describe(ch chan<- *prometheus.Desc) {
	ch <- a.held
	ch <- a.records
}

func (a *attachments) Collect(ch chan<- prometheus.Metric) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen := a.ledger.Generation(); !a.valid || gen != a.gen {
		// The generation is read before the ledger: a change during List makes the next
		// scrape read it again.
		recs, err := a.ledger.List()
		if err != nil {
			a.valid = false
			ch <- prometheus.NewInvalidMetric(a.held, err)
			ch <- prometheus.NewInvalidMetric(a.records, err)
			return
		}
		a.count(recs)
		a.gen, a.valid = gen, true
	}
	for k, n := range a.counts {
		ch <- prometheus.MustNewConstMetric(a.held, prometheus.GaugeValue, float64(n), k.kind, k.plugin, string(k.state))
	}
	ch <- prometheus.MustNewConstMetric(a.records, prometheus.GaugeValue, float64(a.nrecs))
}

// count counts the attempted attachments of recs (planned ones hold nothing). A combination
// seen before and absent now stays, at zero, so that a network type whose last pod left reads
// 0 rather than nothing.
func (a *attachments) count(recs []delegate.Record) {
	if a.counts == nil {
		a.counts = map[attachmentKey]int{}
	}
	for k := range a.counts {
		a.counts[k] = 0
	}
	for _, r := range recs {
		for _, e := range r.Attachments {
			if e.State == delegate.StatePlanned {
				continue
			}
			a.counts[attachmentKey{kind: e.Kind, plugin: e.PluginType(), state: e.State}]++
		}
	}
	a.nrecs = len(recs)
}
