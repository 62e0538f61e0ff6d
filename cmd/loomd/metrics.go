package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/metrics"
	"github.com/loom-cni/loom/sriov/attach"
)

// registerCollectors adds to reg the collectors that read loomd's components when
// Prometheus scrapes: the ledger, IPAM, the primary network's dataplane, the policy engine
// and the SR-IOV pools, those that run.
func registerCollectors(reg prometheus.Registerer, ledger *delegate.Ledger, alloc *ipam.Allocator, primary *fabric.Network,
	settings fabric.Settings, pol *policyState, vfs *sriovState, vfAtt *attach.Attachment) {
	reg.MustRegister(metrics.NewAttachmentsCollector(ledger), metrics.NewIPAMCollector(alloc.Usage))
	if primary != nil {
		if settings.Mode == fabric.ModeBGP {
			reg.MustRegister(metrics.NewBGPCollector(primary.BGPPeers))
		} else {
			reg.MustRegister(metrics.NewVXLANCollector(primary.VXLANStatus))
		}
	}
	if pol != nil {
		reg.MustRegister(metrics.NewPolicyCollector(pol.engine.Stats))
	}
	if vfs.mgr != nil {
		reg.MustRegister(metrics.NewSRIOVCollector(vfs.mgr.Pools, vfAtt.Claimed))
	}
}
