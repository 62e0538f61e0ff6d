package tenants

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Name is the name of a Tenant: its object's name, a DNS label.
type Name string

// The API identity of Tenant, as deployments/crds/loom.dev_tenants.yaml defines it.
const (
	Group   = "loom.dev"
	Version = "v1alpha1"
	Kind    = "Tenant"
)

// GVR is the resource the dynamic client and informers read Tenants through.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "tenants"}

// Object is the Tenant resource as stored in the API server. Its spec is what an
// administrator wrote, unchecked; Parse validates it into a Tenant.
type Object struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   Spec   `json:"spec"`
	Status Status `json:"status,omitempty"`
}

// Spec is a Tenant's desired state.
type Spec struct {
	// NamespaceSelector selects the tenant's namespaces by label. Missing, malformed or empty
	// (matching every namespace), it selects none.
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// SharedNetworks are the NetworkAttachmentDefinitions outside the tenant's namespaces that
	// its pods may use, as "namespace/name".
	SharedNetworks []string `json:"sharedNetworks,omitempty"`
	// VLANs are the VLAN IDs the tenant's networks may use: "100-199" or "42", within 1-4094.
	VLANs []string `json:"vlans,omitempty"`
	// SRIOV says which SR-IOV pools the tenant may draw VFs from, and how many.
	SRIOV *SRIOVSpec `json:"sriov,omitempty"`
	// AddressPools are the tenant's ranges on the primary network.
	AddressPools []AddressPoolSpec `json:"addressPools,omitempty"`
	// Peers are the tenants whose pods this tenant's pods may talk to; traffic flows only
	// between tenants that name each other.
	Peers []string `json:"peers,omitempty"`
	// AllowNetAdmin lets the tenant's pods run with NET_ADMIN (or SYS_ADMIN, NET_RAW,
	// privileged, hostNetwork): with it they can lift the rules on their own interfaces.
	AllowNetAdmin bool `json:"allowNetAdmin,omitempty"`
	// NodeResources are the parts of the nodes the tenant's NADs may act on. Without them a
	// tenant's NAD may not bridge, move or take over a node device, map a host port, or run a
	// plugin Loom does not know to keep to the pod.
	NodeResources *NodeResourcesSpec `json:"nodeResources,omitempty"`
}

// NodeResourcesSpec grants a tenant's NADs parts of the nodes. Interfaces are named as on
// every node; names Loom uses itself (lo, cni0 and every name starting with loom) cannot be
// granted.
type NodeResourcesSpec struct {
	// Masters are the node interfaces the tenant's macvlan, ipvlan, vlan and macvtap NADs may
	// use as their master. Several tenants may share one master: they then share its L2
	// segment, on which Loom's rules keep them apart.
	Masters []string `json:"masters,omitempty"`
	// Bridges are the node bridges the tenant's bridge and ovs NADs may join (the bridge
	// plugin creates one that does not exist). A bridge granted to two tenants is neither's.
	Bridges []string `json:"bridges,omitempty"`
	// HostDevices are the node interfaces the tenant's host-device NADs may move into a pod.
	// A device granted to two tenants is neither's.
	HostDevices []string `json:"hostDevices,omitempty"`
	// HostPorts are the node ports, "30000-30100" or "8080", the tenant's pods may map with
	// portmap or a container's hostPort, for every protocol. Loom's and the node's own ports
	// are never mapped, even within a range.
	HostPorts []string `json:"hostPorts,omitempty"`
	// Plugins are the plugin types, beyond those Loom knows to keep to the pod, that the
	// tenant's NADs may use: the platform admin vouches that they cannot act on the node.
	Plugins []string `json:"plugins,omitempty"`
}

// SRIOVSpec is the SR-IOV part of a Tenant's spec.
type SRIOVSpec struct {
	// Pools are the resource names of the pools, such as loom.dev/sriov_net_a.
	Pools []string `json:"pools,omitempty"`
	// VFQuota is the most VFs the tenant's pods may hold together, counting every SR-IOV
	// resource their containers request; nil for no limit.
	VFQuota *int `json:"vfQuota,omitempty"`
}

// AddressPoolSpec is one of a Tenant's address pools on the primary network.
type AddressPoolSpec struct {
	Name string `json:"name"`
	CIDR string `json:"cidr"`
	// BlockSize is the prefix length of the blocks nodes claim; 26 (or the CIDR's own length,
	// if longer) when left out.
	BlockSize int `json:"blockSize,omitempty"`
}

// Status is a Tenant's observed state, written by loom-controller.
type Status struct {
	// Namespaces are the namespaces the tenant owns, sorted.
	Namespaces []string `json:"namespaces,omitempty"`
	// Pods counts the pods in those namespaces.
	Pods int `json:"pods"`
	// Addresses counts the addresses allocated from the tenant's pools.
	Addresses int `json:"addresses"`
	// Conditions holds ConditionValid and ConditionNamespacesConflict.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ToUnstructured converts o for the dynamic client, setting its apiVersion and kind.
func (o *Object) ToUnstructured() (*unstructured.Unstructured, error) {
	c := *o
	c.APIVersion, c.Kind = GVR.GroupVersion().String(), Kind
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&c)
	if err != nil {
		return nil, fmt.Errorf("convert Tenant %s to unstructured: %w", o.Name, err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// FromUnstructured converts obj, an *unstructured.Unstructured as the dynamic client returns
// and a dynamic informer's store holds, into an Object.
func FromUnstructured(obj any) (*Object, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u == nil {
		return nil, fmt.Errorf("convert %T to Tenant: not an *unstructured.Unstructured", obj)
	}
	o := &Object{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, o); err != nil {
		return nil, fmt.Errorf("convert %s %s to Tenant: %w", u.GetKind(), u.GetName(), err)
	}
	return o, nil
}
