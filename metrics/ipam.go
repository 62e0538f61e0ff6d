package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-cni/loom/fabric/ipam"
)

// ipamCollector reports the node's share of each address pool.
type ipamCollector struct {
	usage                       func() []ipam.PoolUsage
	blocks, addresses, assigned *prometheus.Desc
}

// NewIPAMCollector reports usage, the node's use of each pool it holds blocks of
// ((*ipam.Allocator).Usage): the primary network's pools and loom-ipam's.
func NewIPAMCollector(usage func() []ipam.PoolUsage) prometheus.Collector {
	pool := []string{"pool"}
	return &ipamCollector{
		usage: usage,
		blocks: prometheus.NewDesc("loom_ipam_blocks",
			"Address blocks of the pool this node owns.", pool, nil),
		addresses: prometheus.NewDesc("loom_ipam_addresses",
			"Addresses in this node's blocks of the pool, counting the few (network, broadcast, excluded) never handed out.", pool, nil),
		assigned: prometheus.NewDesc("loom_ipam_allocated_addresses",
			"Addresses of this node's blocks of the pool that are allocated: to pod interfaces, and to the node itself (its VTEP).", pool, nil),
	}
}

func (c *ipamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.blocks
	ch <- c.addresses
	ch <- c.assigned
}

func (c *ipamCollector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.usage() {
		ch <- prometheus.MustNewConstMetric(c.blocks, prometheus.GaugeValue, float64(u.Blocks), u.Pool)
		ch <- prometheus.MustNewConstMetric(c.addresses, prometheus.GaugeValue, float64(u.Addresses), u.Pool)
		ch <- prometheus.MustNewConstMetric(c.assigned, prometheus.GaugeValue, float64(u.InUse), u.Pool)
	}
}
