package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/tenants"
)

// Enforcer writes the rules of the node's pods: the policy engine.
type Enforcer interface {
	Admit(ctx context.Context, p policy.LocalPod) error
	Release(ctx context.Context, containerID string) error
	Restore(ctx context.Context, pods []policy.LocalPod) error
}

// Tenancy decides whether a pod may use the networks it asks for, the same way the
// admission webhook does: the ADD is the second line, for pods admitted while the webhook
// was down or before a Tenant changed.
type Tenancy struct {
	directory     func() *tenants.Directory
	nads          npwg.NADLister
	namespaceWait time.Duration
}

// NewTenancy returns the ADD-time tenancy check over the given directory and NADs.
func NewTenancy(directory func() *tenants.Directory, nads npwg.NADLister) *Tenancy {
	return &Tenancy{directory: directory, nads: nads, namespaceWait: 2 * time.Second}
}

// Check returns a *tenants.Denial when the pod may not have the attachments in specs.
func (t *Tenancy) Check(pod *corev1.Pod, specs []delegate.Spec) error {
	req := tenants.PodRequest{Namespace: pod.Namespace, Name: pod.Name, NetAdmin: tenants.NetAdminReason(&pod.Spec)}
	resources := map[string]bool{}
	_, overridden := pod.Annotations[npwg.DefaultNetworkAnnot]
	for _, s := range specs {
		// The cluster's default network is everyone's; a default network the pod picked
		// itself is checked like any other NAD.
		if (s.Default && !overridden) || s.NetworkUID == "" {
			continue
		}
		ns, name, ok := strings.Cut(s.Network, "/")
		if !ok {
			continue
		}
		n := tenants.Network{Ref: tenants.NetworkRef{Namespace: ns, Name: name}}
		nad, err := t.nads.NAD(ns, name)
		switch {
		case err == nil:
			if n, err = tenants.NetworkOf(nad); err != nil {
				return fmt.Errorf("pod %s/%s: network %s: %w", pod.Namespace, pod.Name, s.Network, err)
			}
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("pod %s/%s: network %s: %w", pod.Namespace, pod.Name, s.Network, err)
		}
		if n.ResourceName != "" {
			resources[n.ResourceName] = true
		}
		req.Networks = append(req.Networks, n)
	}
	req.VFs = requestedDevices(&pod.Spec, resources)
	// Judging a namespace the cache has not seen would treat it as the platform's: wait a
	// moment for the cache, which saw the namespace created before the pod.
	dir := t.directory()
	for deadline := time.Now().Add(t.namespaceWait); !dir.Known(pod.Namespace); dir = t.directory() {
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s/%s: namespace %s is not in loomd's cache yet", pod.Namespace, pod.Name, pod.Namespace)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return dir.CheckPod(req)
}

// requestedDevices counts the devices of the given resources the pod's containers request.
func requestedDevices(spec *corev1.PodSpec, resources map[string]bool) int {
	n := 0
	for _, c := range spec.Containers {
		for name, q := range c.Resources.Limits {
			if resources[string(name)] {
				n += int(q.Value())
			}
		}
	}
	return n
}

// localPod is what the policy engine needs of an attached pod: each attachment's interface
// and addresses, the host side of the primary veth, the netns.
func localPod(pod *corev1.Pod, id delegate.ContainerID, netns string, outcomes []delegate.Outcome) policy.LocalPod {
	p := policy.Pod{
		PodKey: policy.PodKey{Namespace: pod.Namespace, Name: pod.Name},
		Labels: pod.Labels,
	}
	if pod.Spec.Containers != nil {
		for _, c := range pod.Spec.Containers {
			for _, port := range c.Ports {
				if port.Name == "" {
					continue
				}
				proto := string(port.Protocol)
				if proto == "" {
					proto = "TCP"
				}
				p.Ports = append(p.Ports, policy.NamedPort{Name: port.Name, Protocol: proto, Port: uint16(port.ContainerPort)})
			}
		}
	}
	for _, o := range outcomes {
		p.Endpoints = append(p.Endpoints, endpointOf(o))
	}
	return policy.LocalPod{ContainerID: string(id), Netns: netns, Pod: p}
}

// recordPod is localPod for an attachment ledger record: what a restarted loomd knows of a
// pod before its cache has it.
func recordPod(rec delegate.Record, cached *corev1.Pod) (policy.LocalPod, error) {
	outcomes, err := rec.Outcomes()
	if err != nil {
		return policy.LocalPod{}, err
	}
	pod := cached
	if pod == nil {
		pod = &corev1.Pod{}
		pod.Namespace, pod.Name = rec.Pod.Namespace, rec.Pod.Name
	}
	return localPod(pod, rec.ContainerID, rec.Netns, outcomes), nil
}

func endpointOf(o delegate.Outcome) policy.Endpoint {
	ep := policy.Endpoint{Network: policy.NetworkID(o.Network), Interface: o.Ifname}
	if o.Default {
		ep.Network = policy.Primary
	}
	res, err := current.NewResultFromResult(o.Result)
	if err != nil {
		return ep
	}
	if o.Kind == fabric.Kind {
		// Loom's own primary network: the one host-side interface is the pod's veth, where
		// the node enforces the pod's primary rules. Another default network's host side
		// (a bridge) is not the pod's alone, so it carries no rules.
		for _, ifc := range res.Interfaces {
			if ifc.Sandbox == "" {
				ep.HostInterface = ifc.Name
				break
			}
		}
	}
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
			ep.IPs = append(ep.IPs, a.Unmap())
		}
	}
	return ep
}

// tenancyError is the CNI error of a denied pod: the runtime shows it in the pod's events.
func tenancyError(err error) error {
	var d *tenants.Denial
	if errors.As(err, &d) {
		return types.NewError(types.ErrInvalidNetworkConfig, d.Error(), "")
	}
	return types.NewError(types.ErrTryAgainLater, err.Error(), "")
}
