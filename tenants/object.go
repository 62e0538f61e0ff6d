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
	// AllowNetAdmin lets the tenant's pods run with NET_ADMIN (or SYS_ADMIN, privileged,
	// hostNetwork): with it they can lift the rules on their own interfaces.
	AllowNetAdmin bool `json:"allowNetAdmin,omitempty"`
}

// SRIOVSpec is the SR-IOV part of a Tenant's spec.
type SRIOVSpec struct {
	// Pools are the resource names of the pools, such as loom.dev/sriov_net_a.
	Pools []string `json:"pools,omitempty"`
	// VFQuota is the most VFs a request may hold; nil for no limit.
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
