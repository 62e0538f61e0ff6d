package npwg

import (
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/loom-cni/loom/delegate"
)

// DefaultNetwork resolves the configured cluster default network on its own, as it would be
// for a pod with no selection: loomd's readiness, STATUS and GC use it. The Spec has no
// interface name.
func (r *Resolver) DefaultNetwork() (delegate.Spec, error) {
	return r.spec("", attachment{label: r.defaultNet, isDflt: true}, nil)
}

// NetworkSpec resolves a NetworkAttachmentDefinition on its own, without a pod: GC uses it to
// reach every delegate network on the node. The Spec has no interface name.
func (r *Resolver) NetworkSpec(nad *nadv1.NetworkAttachmentDefinition) (delegate.Spec, error) {
	ref := nad.Namespace + "/" + nad.Name
	a := attachment{sel: Selection{Namespace: nad.Namespace, Name: nad.Name}, label: ref, fromPod: true}
	s := delegate.Spec{Kind: delegate.KindCNI}
	conf, err := r.loadNAD("", a, nad.Namespace, nad.Name, nad, &s)
	if err != nil {
		return delegate.Spec{}, err
	}
	s.Config, s.Plugin = conf.bytes, conf.plugin()
	return s, nil
}
