package source

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	nadinformers "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/informers/externalversions"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/tenants"
)

// ipBlockGVR is Loom's IPBlock; a block labelled with a tenant holds only that tenant's pods.
var ipBlockGVR = schema.GroupVersionResource{Group: "loom.dev", Version: "v1alpha1", Resource: "ipblocks"}

const (
	tenantLabel = "loom.dev/tenant"
)

// SourceConfig says where the primary network's facts are.
type SourceConfig struct {
	// ClusterCIDRs are the primary network's pod ranges, one per address family.
	ClusterCIDRs []netip.Prefix
	// HostAddressAnnotation is the Node annotation holding a node's own address inside the
	// cluster CIDR (its VTEP address), if any.
	HostAddressAnnotation string
	// Node is the node whose engine reads the source, if any: its pods are listed as peers
	// only (Node ""), since the engine knows them better from their ADDs, and the snapshot
	// leaves room after its pods for the engine to add them.
	Node string
}

// localRoom is how many pods an engine may add to a snapshot without copying it: more than a
// node runs.
const localRoom = 512

// ClusterSource is a Source backed by informers: every pod of the cluster, namespaces,
// tenants, NetworkPolicies, MultiNetworkPolicies, NetworkAttachmentDefinitions, IPBlocks and
// Nodes. Objects are converted once, when they change, so a snapshot costs a copy.
type ClusterSource struct {
	cfg     SourceConfig
	log     *slog.Logger
	changed chan struct{}
	synced  []cache.InformerSynced
	start   []func(stop <-chan struct{})

	mu         sync.Mutex
	pods       map[string]policy.Pod // by namespace/name
	namespaces map[string]map[string]string
	tenants    map[string]tenants.Tenant
	policies   map[string]policy.Policy // by kind/namespace/name
	networks   map[policy.NetworkID]policy.Network
	blocks     map[string]ipBlock
	hosts      map[string]netip.Addr // by node
	dir        *tenants.Directory    // nil: rebuild
	snap       *policy.Snapshot      // nil: rebuild
}

type ipBlock struct {
	tenant string
	cidr   netip.Prefix
}

// NewClusterSource prepares the informers; Run starts them.
func NewClusterSource(cfg SourceConfig, kube kubernetes.Interface, dyn dynamic.Interface, nads nadclient.Interface, log *slog.Logger) *ClusterSource {
	s := &ClusterSource{
		cfg: cfg, log: log.With("component", "policy-source"),
		changed:    make(chan struct{}, 1),
		pods:       map[string]policy.Pod{},
		namespaces: map[string]map[string]string{},
		tenants:    map[string]tenants.Tenant{},
		policies:   map[string]policy.Policy{},
		networks:   map[policy.NetworkID]policy.Network{},
		blocks:     map[string]ipBlock{},
		hosts:      map[string]netip.Addr{},
	}
	kf := informers.NewSharedInformerFactory(kube, 0)
	s.watch(trimmed(kf.Core().V1().Pods().Informer(), trimPod), s.setPod, s.deletePod)
	s.watch(trimmed(kf.Core().V1().Namespaces().Informer(), trimNamespace), s.setNamespace, s.deleteNamespace)
	s.watch(trimmed(kf.Core().V1().Nodes().Informer(), s.trimNode), s.setNode, s.deleteNode)
	s.watch(kf.Networking().V1().NetworkPolicies().Informer(), s.setNetworkPolicy, s.deleteNetworkPolicy)
	s.start = append(s.start, kf.Start)
	df := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	s.watch(df.ForResource(tenants.GVR).Informer(), s.setTenant, s.deleteTenant)
	s.watch(df.ForResource(policy.MultiNetworkPolicyGVR).Informer(), s.setMultiPolicy, s.deleteMultiPolicy)
	s.watch(trimmed(df.ForResource(ipBlockGVR).Informer(), trimBlock), s.setBlock, s.deleteBlock)
	s.start = append(s.start, df.Start)
	nf := nadinformers.NewSharedInformerFactory(nads, 0)
	s.watch(nf.K8sCniCncfIo().V1().NetworkAttachmentDefinitions().Informer(), s.setNAD, s.deleteNAD)
	s.start = append(s.start, nf.Start)
	return s
}

// Run starts the informers; HasSynced tells when their first lists are in.
func (s *ClusterSource) Run(stop <-chan struct{}) {
	for _, start := range s.start {
		start(stop)
	}
}

// HasSynced is true once every informer has its first list.
func (s *ClusterSource) HasSynced() bool {
	for _, ok := range s.synced {
		if !ok() {
			return false
		}
	}
	return true
}

// Changed implements Source.
func (s *ClusterSource) Changed() <-chan struct{} { return s.changed }

func (s *ClusterSource) watch(inf cache.SharedIndexInformer, set func(any), del func(any)) {
	s.synced = append(s.synced, inf.HasSynced)
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.update(func() { set(o) }) },
		UpdateFunc: func(_, o any) { s.update(func() { set(o) }) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			s.update(func() { del(o) })
		},
	})
}

func (s *ClusterSource) update(f func()) {
	s.mu.Lock()
	f()
	s.snap = nil
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Snapshot implements Source. Until the caches change it returns the same snapshot, which
// callers must not modify.
func (s *ClusterSource) Snapshot() policy.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap == nil {
		snap := s.build()
		s.snap = &snap
	}
	return *s.snap
}

func (s *ClusterSource) build() policy.Snapshot {
	dir := s.directory()
	snap := policy.Snapshot{ClusterCIDRs: s.cfg.ClusterCIDRs}
	for _, h := range s.hosts {
		snap.Hosts = append(snap.Hosts, h)
	}
	blocks := map[string][]netip.Prefix{}
	for _, b := range s.blocks {
		if b.tenant != "" {
			blocks[b.tenant] = append(blocks[b.tenant], b.cidr)
		}
	}
	for _, t := range dir.Tenants() {
		pt := policy.Tenant{Name: string(t.Name), Blocks: blocks[string(t.Name)]}
		for _, p := range t.Peers {
			pt.Peers = append(pt.Peers, string(p))
		}
		snap.Tenants = append(snap.Tenants, pt)
	}
	tenantOf := map[string]string{}
	for name, l := range s.namespaces {
		t := namespaceTenant(dir, name)
		tenantOf[name] = t
		snap.Namespaces = append(snap.Namespaces, policy.Namespace{Name: name, Labels: l, Tenant: t})
	}
	for _, n := range s.networks {
		snap.Networks = append(snap.Networks, n)
	}
	snap.Pods = make([]policy.Pod, 0, len(s.pods)+localRoom)
	for _, p := range s.pods {
		t, ok := tenantOf[p.Namespace]
		if !ok {
			t = namespaceTenant(dir, p.Namespace)
		}
		p.Tenant = t
		if s.cfg.Node != "" && p.Node == s.cfg.Node {
			p.Node = ""
		}
		snap.Pods = append(snap.Pods, p)
	}
	for _, p := range s.policies {
		snap.Policies = append(snap.Policies, p)
	}
	return snap
}

// namespaceTenant is the tenant a namespace's pods belong to for policy. A namespace that
// two tenants claim belongs to neither: its pods form an enclave of their own, which no
// tenant and not the platform can be mistaken for.
func namespaceTenant(dir *tenants.Directory, ns string) string {
	if len(dir.Conflicted(ns)) > 0 {
		return "conflicted:" + ns
	}
	if t, ok := dir.TenantOf(ns); ok {
		return string(t.Name)
	}
	return ""
}

// Directory returns the tenants as the caches see them now.
func (s *ClusterSource) Directory() *tenants.Directory {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.directory()
}

func (s *ClusterSource) directory() *tenants.Directory {
	if s.dir == nil {
		ts := make([]tenants.Tenant, 0, len(s.tenants))
		for _, t := range s.tenants {
			ts = append(ts, t)
		}
		s.dir = tenants.NewDirectory(ts, s.namespaces)
	}
	return s.dir
}

func (s *ClusterSource) setPod(o any) {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	key := pod.Namespace + "/" + pod.Name
	if pod.Spec.HostNetwork || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		// A host-network pod's addresses are its node's; a finished pod holds none.
		delete(s.pods, key)
		return
	}
	s.pods[key] = podOf(pod)
}

func (s *ClusterSource) deletePod(o any) {
	if pod, ok := o.(*corev1.Pod); ok {
		delete(s.pods, pod.Namespace+"/"+pod.Name)
	}
}

// podOf converts a pod: its endpoints come from its network-status annotation, or from its
// status addresses for the primary network when that is not written yet.
func podOf(pod *corev1.Pod) policy.Pod {
	p := policy.Pod{
		PodKey: policy.PodKey{Namespace: pod.Namespace, Name: pod.Name},
		Node:   pod.Spec.NodeName,
		Labels: pod.Labels,
	}
	for _, c := range pod.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name != "" {
				proto := string(port.Protocol)
				if proto == "" {
					proto = "TCP"
				}
				p.Ports = append(p.Ports, policy.NamedPort{Name: port.Name, Protocol: proto, Port: uint16(port.ContainerPort)})
			}
		}
	}
	var statuses []nadv1.NetworkStatus
	if v := pod.Annotations[nadv1.NetworkStatusAnnot]; v != "" {
		if err := json.Unmarshal([]byte(v), &statuses); err != nil {
			statuses = nil
		}
	}
	primary := false
	for _, st := range statuses {
		ep := policy.Endpoint{Network: policy.NetworkID(st.Name), Interface: st.Interface, IPs: parseAddrs(st.IPs)}
		if mac, err := policy.ParseMAC(st.Mac); err == nil {
			ep.MAC = mac
		}
		if st.Default {
			ep.Network = policy.Primary
			primary = true
		}
		p.Endpoints = append(p.Endpoints, ep)
	}
	if !primary {
		var ips []string
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		if addrs := parseAddrs(ips); len(addrs) > 0 {
			p.Endpoints = append(p.Endpoints, policy.Endpoint{Network: policy.Primary, Interface: "eth0", IPs: addrs})
		}
	}
	return p
}

func parseAddrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func (s *ClusterSource) setNamespace(o any) {
	if ns, ok := o.(*corev1.Namespace); ok {
		s.namespaces[ns.Name] = ns.Labels
		s.dir = nil
	}
}

func (s *ClusterSource) deleteNamespace(o any) {
	if ns, ok := o.(*corev1.Namespace); ok {
		delete(s.namespaces, ns.Name)
		s.dir = nil
	}
}

func (s *ClusterSource) setNode(o any) {
	node, ok := o.(*corev1.Node)
	if !ok || s.cfg.HostAddressAnnotation == "" {
		return
	}
	if a, err := netip.ParseAddr(node.Annotations[s.cfg.HostAddressAnnotation]); err == nil {
		s.hosts[node.Name] = a.Unmap()
	} else {
		delete(s.hosts, node.Name)
	}
}

func (s *ClusterSource) deleteNode(o any) {
	if node, ok := o.(*corev1.Node); ok {
		delete(s.hosts, node.Name)
	}
}

func (s *ClusterSource) setNetworkPolicy(o any) {
	if np, ok := o.(*networkingv1.NetworkPolicy); ok {
		p := policy.FromNetworkPolicy(np)
		s.logProblems(p)
		s.policies["np/"+np.Namespace+"/"+np.Name] = p
	}
}

func (s *ClusterSource) deleteNetworkPolicy(o any) {
	if np, ok := o.(*networkingv1.NetworkPolicy); ok {
		delete(s.policies, "np/"+np.Namespace+"/"+np.Name)
	}
}

func (s *ClusterSource) setMultiPolicy(o any) {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	p := policy.FromMultiNetworkPolicy(u)
	s.logProblems(p)
	s.policies["mnp/"+u.GetNamespace()+"/"+u.GetName()] = p
}

func (s *ClusterSource) deleteMultiPolicy(o any) {
	if u, ok := o.(*unstructured.Unstructured); ok {
		delete(s.policies, "mnp/"+u.GetNamespace()+"/"+u.GetName())
	}
}

func (s *ClusterSource) logProblems(p policy.Policy) {
	if len(p.Problems) > 0 {
		s.log.Warn("policy has parts that cannot be used; they allow nothing", "kind", p.Kind,
			"namespace", p.Namespace, "policy", p.Name, "problems", strings.Join(p.Problems, "; "))
	}
}

func (s *ClusterSource) setTenant(o any) {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	obj, err := tenants.FromUnstructured(u)
	if err != nil {
		s.log.Warn("ignoring an unreadable Tenant", "tenant", u.GetName(), "error", err)
		return
	}
	t, _ := tenants.Parse(obj)
	s.tenants[u.GetName()] = t
	s.dir = nil
}

func (s *ClusterSource) deleteTenant(o any) {
	if u, ok := o.(*unstructured.Unstructured); ok {
		delete(s.tenants, u.GetName())
		s.dir = nil
	}
}

func (s *ClusterSource) setBlock(o any) {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	cidr, _, _ := unstructured.NestedString(u.Object, "spec", "cidr")
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return
	}
	s.blocks[u.GetName()] = ipBlock{tenant: u.GetLabels()[tenantLabel], cidr: p.Masked()}
}

func (s *ClusterSource) deleteBlock(o any) {
	if u, ok := o.(*unstructured.Unstructured); ok {
		delete(s.blocks, u.GetName())
	}
}

func (s *ClusterSource) setNAD(o any) {
	nad, ok := o.(*nadv1.NetworkAttachmentDefinition)
	if !ok {
		return
	}
	id := policy.NetworkID(nad.Namespace + "/" + nad.Name)
	s.networks[id] = policy.Network{ID: id, Subnets: IPAMSubnets([]byte(nad.Spec.Config))}
}

func (s *ClusterSource) deleteNAD(o any) {
	if nad, ok := o.(*nadv1.NetworkAttachmentDefinition); ok {
		delete(s.networks, policy.NetworkID(nad.Namespace+"/"+nad.Name))
	}
}

// IPAMSubnets returns the ranges, of both address families, a network configuration's IPAM hands addresses from:
// "subnet" and "ranges" (host-local), "addresses" (static), "range" (loom-ipam, whereabouts), in a single
// configuration or any plugin of a list. A configuration it cannot read yields none.
func IPAMSubnets(config []byte) []netip.Prefix {
	var conf struct {
		IPAM    json.RawMessage   `json:"ipam"`
		Plugins []json.RawMessage `json:"plugins"`
	}
	if json.Unmarshal(config, &conf) != nil {
		return nil
	}
	var out []netip.Prefix
	add := func(s string) {
		if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
			out = append(out, p.Masked())
		}
	}
	read := func(raw json.RawMessage) {
		var ipam struct {
			Subnet string `json:"subnet"`
			Range  string `json:"range"`
			Ranges [][]struct {
				Subnet string `json:"subnet"`
			} `json:"ranges"`
			Addresses []struct {
				Address string `json:"address"`
			} `json:"addresses"`
		}
		if len(raw) == 0 || json.Unmarshal(raw, &ipam) != nil {
			return
		}
		add(ipam.Subnet)
		add(ipam.Range)
		for _, a := range ipam.Addresses {
			add(a.Address)
		}
		for _, set := range ipam.Ranges {
			for _, r := range set {
				add(r.Subnet)
			}
		}
	}
	read(conf.IPAM)
	for _, plugin := range conf.Plugins {
		var pc struct {
			IPAM json.RawMessage `json:"ipam"`
		}
		if json.Unmarshal(plugin, &pc) == nil {
			read(pc.IPAM)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return slices.Compact(out)
}
