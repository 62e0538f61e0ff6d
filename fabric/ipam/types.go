package ipam

import (
	"fmt"
	"net/netip"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The API identity of IPBlock, as deployments/crds/loom.dev_ipblocks.yaml defines it.
const (
	Group   = "loom.dev"
	Version = "v1alpha1"
	Kind    = "IPBlock"
)

// GVR is the resource the dynamic client reads and writes IPBlocks through.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "ipblocks"}

// Labels every IPBlock carries, so that a node lists its own blocks and a claim lists a pool's
// without reading every block of the cluster.
const (
	LabelPool   = "loom.dev/pool"
	LabelNode   = "loom.dev/node"
	LabelTenant = "loom.dev/tenant"
)

// OwnerKind says what holds an allocation.
type OwnerKind string

// The kinds of owner an allocation can have.
const (
	// OwnerPod is an interface of a pod, keyed by container ID and interface name.
	OwnerPod OwnerKind = "pod"
	// OwnerNode is an address the node itself uses (a VTEP address, for example), keyed by
	// a name saying what it is for.
	OwnerNode OwnerKind = "node"
)

// Owner says who holds an allocated address. A pod owner carries the pod's namespace, name
// and UID so that people and the controller can tell whose address it is; the allocation
// itself is keyed by ContainerID and Ifname. A node owner carries only a Name such as "vtep";
// the node is the owner of the block.
type Owner struct {
	Kind      OwnerKind `json:"kind"`
	Namespace string    `json:"namespace,omitempty"`
	// Name is the pod's name, or for the node what the address is for.
	Name string `json:"name"`
	// UID is the pod's UID (K8S_POD_UID); loom-controller releases the address once no pod
	// has it.
	UID string `json:"uid,omitempty"`
	// ContainerID is the runtime's sandbox container ID (CNI_CONTAINERID).
	ContainerID string `json:"containerID,omitempty"`
	// Ifname is the interface name inside the pod (CNI_IFNAME).
	Ifname string `json:"ifname,omitempty"`
}

// validate checks that the owner carries the key its kind is allocated by.
func (o Owner) validate() error {
	switch o.Kind {
	case OwnerPod:
		if o.ContainerID == "" || o.Ifname == "" {
			return fmt.Errorf("pod owner %s/%s: a container ID and an interface name are required", o.Namespace, o.Name)
		}
	case OwnerNode:
		if o.Name == "" {
			return fmt.Errorf("node owner: a name saying what the address is for is required")
		}
	default:
		return fmt.Errorf("owner kind %q: want %q or %q", o.Kind, OwnerPod, OwnerNode)
	}
	return nil
}

// sameKey reports whether o and other would be given the same address in one pool: the same
// container interface for pods, the same name for the node.
func (o Owner) sameKey(other Owner) bool {
	return o.key() == other.key()
}

// ownerKey is what an allocation is keyed by in a pool; see sameKey.
type ownerKey struct {
	kind                      OwnerKind
	containerID, ifname, name string
}

func (o Owner) key() ownerKey {
	if o.Kind == OwnerPod {
		return ownerKey{kind: o.Kind, containerID: o.ContainerID, ifname: o.Ifname}
	}
	return ownerKey{kind: o.Kind, name: o.Name}
}

// logAttrs returns the attributes that name the owner in a log message.
func (o Owner) logAttrs() []any {
	if o.Kind == OwnerNode {
		return []any{"owner", o.Name}
	}
	return []any{"namespace", o.Namespace, "pod", o.Name, "containerID", o.ContainerID, "ifname", o.Ifname}
}

// Allocation is one address of a block and who holds it since when.
type Allocation struct {
	IP    string      `json:"ip"`
	Owner Owner       `json:"owner"`
	Since metav1.Time `json:"since"`
}

// same reports whether a and b record the same allocation, so that a change planned on one
// version of a block can be applied to a later version.
func (a Allocation) same(b Allocation) bool {
	return a.IP == b.IP && a.Owner == b.Owner && a.Since.Equal(&b.Since)
}

// IPBlock is the custom resource recording one block of a pool: which node owns it and every
// address allocated in it. It is cluster-scoped and named by BlockName.
type IPBlock struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec IPBlockSpec `json:"spec"`
}

// IPBlockSpec is the content of an IPBlock. Pool, CIDR, Node and Tenant never change after
// the block is claimed; only its owning node writes Allocations, except that loom-controller
// removes the allocations of pods that no longer exist.
type IPBlockSpec struct {
	// Pool names the pool the block was carved from.
	Pool string `json:"pool"`
	// CIDR is the block, for example "10.244.0.64/26".
	CIDR string `json:"cidr"`
	// Node is the name of the node that owns the block.
	Node string `json:"node"`
	// Tenant is the tenant whose pods draw from the pool, empty for a pool of no tenant.
	Tenant string `json:"tenant,omitempty"`
	// Allocations lists the block's allocated addresses in ascending order.
	Allocations []Allocation `json:"allocations,omitempty"`
}

// newIPBlock returns the IPBlock that claims block of pool for node.
func newIPBlock(pool Pool, block netip.Prefix, node string) IPBlock {
	labels := map[string]string{LabelPool: pool.Name, LabelNode: node}
	if pool.Tenant != "" {
		labels[LabelTenant] = pool.Tenant
	}
	return IPBlock{
		TypeMeta:   metav1.TypeMeta{APIVersion: GVR.GroupVersion().String(), Kind: Kind},
		ObjectMeta: metav1.ObjectMeta{Name: BlockName(pool.Name, block), Labels: labels},
		Spec:       IPBlockSpec{Pool: pool.Name, CIDR: block.String(), Node: node, Tenant: pool.Tenant},
	}
}

// Prefix parses the block's CIDR.
func (s IPBlockSpec) Prefix() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s.CIDR)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("parse block cidr %q: %w", s.CIDR, err)
	}
	return p, nil
}

// DeepCopy returns a copy of b that shares no memory with it.
func (b *IPBlock) DeepCopy() *IPBlock {
	if b == nil {
		return nil
	}
	out := &IPBlock{TypeMeta: b.TypeMeta, Spec: b.Spec}
	b.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	// Allocations hold only values (metav1.Time wraps a time.Time), so a shallow copy of
	// the slice is a deep one.
	out.Spec.Allocations = slices.Clone(b.Spec.Allocations)
	return out
}

// ToUnstructured converts b into the form the dynamic client sends, with its apiVersion and
// kind set.
func (b *IPBlock) ToUnstructured() (*unstructured.Unstructured, error) {
	c := b.DeepCopy()
	c.APIVersion, c.Kind = GVR.GroupVersion().String(), Kind
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(c)
	if err != nil {
		return nil, fmt.Errorf("convert IPBlock %s to unstructured: %w", b.Name, err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// FromUnstructured converts obj, an *unstructured.Unstructured as the dynamic client returns
// and a dynamic informer's store holds, into an IPBlock.
func FromUnstructured(obj any) (*IPBlock, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u == nil {
		return nil, fmt.Errorf("convert %T to IPBlock: not an *unstructured.Unstructured", obj)
	}
	b := &IPBlock{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, b); err != nil {
		return nil, fmt.Errorf("convert %s %s to IPBlock: %w", u.GetKind(), u.GetName(), err)
	}
	return b, nil
}
