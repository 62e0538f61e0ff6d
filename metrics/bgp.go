package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-cni/loom/fabric/bgp"
)

// bgpCollector reports the node's BGP sessions.
type bgpCollector struct {
	peers                        func(context.Context) ([]bgp.PeerState, error)
	sessions, received, accepted *prometheus.Desc
}

// NewBGPCollector reports the sessions peers returns ((*fabric.Network).BGPPeers, or a
// speaker's Peers): nothing before the speaker starts.
func NewBGPCollector(peers func(context.Context) ([]bgp.PeerState, error)) prometheus.Collector {
	return &bgpCollector{
		peers: peers,
		sessions: prometheus.NewDesc("loom_bgp_sessions",
			"BGP sessions of this node, by peer address and session state (idle, connect, active, opensent, openconfirm, established): 1 for the state the session is in.",
			[]string{"peer", "state"}, nil),
		received: prometheus.NewDesc("loom_bgp_received_routes",
			"IPv4 unicast prefixes this node received from the peer.", []string{"peer"}, nil),
		accepted: prometheus.NewDesc("loom_bgp_accepted_routes",
			"IPv4 unicast prefixes received from the peer that passed GoBGP's loop checks.", []string{"peer"}, nil),
	}
}

func (c *bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sessions
	ch <- c.received
	ch <- c.accepted
}

func (c *bgpCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	peers, err := c.peers(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.sessions, err)
		return
	}
	for _, p := range peers {
		addr := p.Address.String()
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, 1, addr, p.State)
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.GaugeValue, float64(p.Received), addr)
		ch <- prometheus.MustNewConstMetric(c.accepted, prometheus.GaugeValue, float64(p.Accepted), addr)
	}
}
