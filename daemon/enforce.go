package daemon

import (
	"context"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/fabric/podnet"
	"github.com/loom-cni/loom/policy"
)

// Enforcer writes the rules of the node's pods: the policy engine.
type Enforcer interface {
	Admit(ctx context.Context, p policy.LocalPod) error
	Release(ctx context.Context, containerID string) error
	Restore(ctx context.Context, pods []policy.LocalPod) error
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
		ep := endpointOf(o)
		ep.LinkLocal = podnet.LinkLocals(netns, ep.Interface)
		p.Endpoints = append(p.Endpoints, ep)
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
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox != "" && ifc.Name == o.Ifname {
			if mac, err := policy.ParseMAC(ifc.Mac); err == nil {
				ep.MAC = mac
			}
		}
	}
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			ep.IPs = append(ep.IPs, a.Unmap())
		}
	}
	return ep
}
