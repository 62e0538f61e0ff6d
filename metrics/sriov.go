package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/deviceplugin"
)

// The state label's values of loom_sriov_vfs: they partition each pool.
const (
	vfAttached  = "attached"
	vfAvailable = "available"
	vfUnhealthy = "unhealthy"
)

// sriovCollector reports the VFs of the node's pools.
type sriovCollector struct {
	pools   func() map[sriov.ResourceName][]sriov.VF
	claimed func() ([]string, error)
	vfs     *prometheus.Desc
}

// NewSRIOVCollector reports the VFs pools advertises ((*deviceplugin.Manager).Pools) and which
// of them claimed says are attached to a pod ((*attach.Attachment).Claimed). It reports
// nothing before the device plugins' first scan.
func NewSRIOVCollector(pools func() map[sriov.ResourceName][]sriov.VF, claimed func() ([]string, error)) prometheus.Collector {
	return &sriovCollector{
		pools:   pools,
		claimed: claimed,
		vfs: prometheus.NewDesc("loom_sriov_vfs",
			"VFs of the SR-IOV pool (the extended resource it is advertised as), by state: attached (to a pod interface), available (healthy and free), unhealthy (link down, and free).",
			[]string{"pool", "state"}, nil),
	}
}

func (c *sriovCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.vfs }

func (c *sriovCollector) Collect(ch chan<- prometheus.Metric) {
	pools := c.pools()
	if pools == nil {
		return
	}
	claimed, err := c.claimed()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.vfs, err)
		return
	}
	attached := make(map[string]bool, len(claimed))
	for _, addr := range claimed {
		attached[addr] = true
	}
	for pool, vfs := range pools {
		var n [3]int // attached, available, unhealthy
		for _, vf := range vfs {
			switch {
			case attached[vf.Address]:
				n[0]++
			case deviceplugin.Healthy(vf):
				n[1]++
			default:
				n[2]++
			}
		}
		for i, state := range [...]string{vfAttached, vfAvailable, vfUnhealthy} {
			ch <- prometheus.MustNewConstMetric(c.vfs, prometheus.GaugeValue, float64(n[i]), string(pool), state)
		}
	}
}
