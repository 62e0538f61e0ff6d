package main

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/loom-cni/loom/daemon"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/policy/source"
	"github.com/loom-cni/loom/tenants"
)

// policyState tells readiness whether the engine has written the node's rules: a node must
// not start pods before the rules of the pods it already runs are back.
type policyState struct {
	engine *policy.Engine

	mu       sync.Mutex
	restored bool
	lastErr  error
}

func (p *policyState) err() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.restored {
		return nil
	}
	if p.lastErr != nil {
		return p.lastErr
	}
	return errors.New("waiting for the policy caches to fill")
}

func (p *policyState) set(restored bool, err error) {
	p.mu.Lock()
	p.restored, p.lastErr = restored, err
	p.mu.Unlock()
}

// startPolicy wires the policy engine into the CNI service and starts it: informers, then,
// once they hold the cluster, the node's rules rewritten from the ledger, then the loop.
func startPolicy(ctx context.Context, cfg daemon.Config, settings fabric.Settings, primary *fabric.Network, kube kubernetes.Interface, dyn dynamic.Interface,
	nads nadclient.Interface, cluster *daemon.Cluster, svc *daemon.Service, log *slog.Logger) *policyState {
	src := source.NewClusterSource(source.SourceConfig{
		ClusterCIDRs:          []netip.Prefix{settings.ClusterCIDR},
		HostAddressAnnotation: fabric.AnnotationVTEPAddr,
		Node:                  cfg.NodeName,
	}, kube, dyn, nads, log)
	// Addresses and MACs a pod asks for are checked against every pod's network-status.
	svc.SetClusterPods(src)
	engine := policy.NewEngine(cfg.NodeName, cfg.Policy.Nft, "", src, log)
	if primary != nil {
		primary.SetPoolFor(tenantPools(src.Directory, settings.ClusterCIDR))
	}
	svc.SetPolicy(daemon.NewTenancy(src.Directory, cluster), engine)
	state := &policyState{engine: engine}
	go src.Run(ctx.Done())
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for !src.HasSynced() || !cluster.Synced() {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		for {
			err := svc.RestorePolicy(ctx)
			state.set(err == nil, err)
			if err == nil {
				break
			}
			log.Error("write the node's rules", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		log.Info("policy rules in place", "component", "policy")
		engine.Run(ctx, cfg.Policy.VerifyInterval.Duration)
	}()
	return state
}

// tenantPools makes a tenant's pods draw their primary addresses from the tenant's first
// address pool inside the cluster CIDR, in blocks labelled with the tenant: the policy engine
// then matches the tenant's pods by block prefix. Everyone else draws from the default pool,
// which leaves the tenants' ranges alone.
func tenantPools(directory func() *tenants.Directory, clusterCIDR netip.Prefix) fabric.PoolFor {
	return func(namespace string, def ipam.Pool) ipam.Pool {
		dir := directory()
		if t, ok := dir.TenantOf(namespace); ok && len(dir.Conflicted(namespace)) == 0 {
			for _, ap := range t.AddressPools {
				if usablePool(ap.CIDR, clusterCIDR) {
					return ipam.Pool{Name: "tenant-" + string(t.Name) + "-" + ap.Name, CIDR: ap.CIDR, BlockSize: ap.BlockSize, Tenant: string(t.Name)}.WithDefaults()
				}
			}
		}
		def.Exclude = slices.Clone(def.Exclude)
		for _, t := range dir.Tenants() {
			for _, ap := range t.AddressPools {
				if usablePool(ap.CIDR, clusterCIDR) {
					def.Exclude = append(def.Exclude, ap.CIDR)
				}
			}
		}
		return def
	}
}

// usablePool: a tenant pool must lie inside the cluster CIDR, where every node routes pods.
func usablePool(pool, clusterCIDR netip.Prefix) bool {
	return pool.IsValid() && clusterCIDR.Contains(pool.Addr()) && pool.Bits() >= clusterCIDR.Bits()
}
