package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-cni/loom/fabric/vxlan"
)

// The path label's values: through the VTEP, or straight over the underlay
// (vxlan-crosssubnet).
const (
	pathVXLAN  = "vxlan"
	pathDirect = "direct"
)

// vxlanCollector reports what the node's VXLAN dataplane programs.
type vxlanCollector struct {
	status                  func() (vxlan.Status, bool)
	peers, routes, rejected *prometheus.Desc
}

// NewVXLANCollector reports status ((*fabric.Network).VXLANStatus): nothing until the VTEP
// has synced once.
func NewVXLANCollector(status func() (vxlan.Status, bool)) prometheus.Collector {
	path := []string{"path"}
	return &vxlanCollector{
		status: status,
		peers: prometheus.NewDesc("loom_vxlan_peers",
			"Remote nodes this node reaches, by path: vxlan (through its VTEP: one neighbour and one FDB entry each) or direct (over the underlay, vxlan-crosssubnet).", path, nil),
		routes: prometheus.NewDesc("loom_vxlan_routes",
			"Routes to remote nodes' address blocks, by path: vxlan or direct.", path, nil),
		rejected: prometheus.NewDesc("loom_vxlan_rejected_claims",
			"Remote nodes, or blocks of them, left out of the dataplane because what they publish is unusable or claimed by another node.", nil, nil),
	}
}

func (c *vxlanCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.peers
	ch <- c.routes
	ch <- c.rejected
}

func (c *vxlanCollector) Collect(ch chan<- prometheus.Metric) {
	st, ok := c.status()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(st.Peers), pathVXLAN)
	ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(st.DirectPeers), pathDirect)
	ch <- prometheus.MustNewConstMetric(c.routes, prometheus.GaugeValue, float64(st.Routes), pathVXLAN)
	ch <- prometheus.MustNewConstMetric(c.routes, prometheus.GaugeValue, float64(st.DirectRoutes), pathDirect)
	ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.GaugeValue, float64(st.Rejected))
}
