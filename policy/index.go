package policy

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// compiler holds one Compile call's indexes of the snapshot and the sets computed so far.
// Indexes are built in one pass over the snapshot; everything else is computed on demand,
// for the local endpoints only, and at most once.
type compiler struct {
	s *Snapshot

	local        []*Pod
	podsByNS     podIndex
	podsByTenant podIndex
	tenants      map[string]*Tenant
	nsLabels     map[string]map[string]string
	policiesByNS map[string][]compiledPolicy

	// Built when first needed.
	nsByLabel       map[string]map[string][]string // label key → value → namespaces, for the keys asked for
	podsByPort      map[string][]*Pod              // container port name → pods
	nsMatches       map[string][]string            // selector → namespaces with pods it selects
	mutual          map[string][]string            // tenant → itself and its mutual peers
	platformIPs     []netip.Addr                   // primary addresses of the platform's pods and the hosts, sorted
	tenantSecondary *bool                          // whether some tenant's pod is on a secondary network

	sets        map[string]AddrSet
	guardNames  map[guardKey]string
	peerNames   map[peerSelection]string
	namedSplits map[peerSelection][]portSet // the sets of a named egress port, by port number
}

// guardKey is what a guard's set means: the universe of a network (tenant unused), or what
// a tenant reaches on it.
type guardKey struct {
	kind    string
	network NetworkID
	tenant  string
}

// peerSelection is what a peer's set means: the pods a selector picks on a network and, for a
// named egress port, among them those where the name is this port. It says nothing of the
// policy, rule or peer it comes from, so that the same selection in several policies (every
// tenant's "DNS in kube-system", say) is one set.
type peerSelection struct {
	network NetworkID
	scope   string // "any", "namespace" (pods of namespace), "namespaces" (selected by namespaces) or "block" (pods in an ipBlock)
	value   string // the namespace, the namespace selector, or the block with its excepts
	pods    string // the pod selector
	port    validPort
}

func selectionOf(pol compiledPolicy, peer validPeer, n NetworkID) peerSelection {
	switch {
	case peer.index < 0:
		return peerSelection{network: n, scope: "any"}
	case peer.cidr.IsValid():
		block := peer.cidr.String()
		for _, e := range peer.except {
			block += " -" + e.String()
		}
		return peerSelection{network: n, scope: "block", value: block}
	case peer.namespaces == nil:
		return peerSelection{network: n, scope: "namespace", value: pol.Namespace, pods: peer.podsKey}
	}
	return peerSelection{network: n, scope: "namespaces", value: peer.namespacesKey, pods: peer.podsKey}
}

func (s peerSelection) setName(more ...string) string {
	parts := append([]string{string(s.network), s.scope, s.value, s.pods}, more...)
	if s.port.name != "" {
		parts = append(parts, s.port.name, s.port.protocol)
	}
	return setName(kindPeer, parts...)
}

// podIndex groups the snapshot's pods by a key without a slice per key. Each time a pod is
// added under a key it gets an entry of its own, chained to the key's entry before it; last
// holds each key's newest entry. A pod may be added under several keys (a pod with several
// networks): each entry has its own link, so one key's chain never runs into another's.
// Adding costs one map lookup and, within the room the index was made with, no allocation,
// which keeps Compile's pass over a large cluster cheap.
type podIndex struct {
	pods    []Pod
	keys    map[string]int32 // key → its position in last
	last    []int32          // per key, its newest entry
	entries []indexEntry
}

// indexEntry is one pod filed under one key, with the key's entry filed before it (-1: none).
type indexEntry struct {
	pod, next int32
}

// newPodIndex makes an index of pods with room for the given number of keys and entries.
func newPodIndex(pods []Pod, keys, entries int) podIndex {
	return podIndex{pods: pods, keys: make(map[string]int32, keys), last: make([]int32, 0, keys), entries: make([]indexEntry, 0, entries)}
}

func (x *podIndex) add(key string, i int) {
	k, ok := x.keys[key]
	if !ok {
		k = int32(len(x.last))
		x.keys[key] = k
		x.last = append(x.last, -1)
	}
	x.entries = append(x.entries, indexEntry{pod: int32(i), next: x.last[k]})
	x.last[k] = int32(len(x.entries) - 1)
}

// each calls f for every pod with key, last added first.
func (x *podIndex) each(key string, f func(*Pod)) {
	k, ok := x.keys[key]
	if !ok {
		return
	}
	for e := x.last[k]; e >= 0; e = x.entries[e].next {
		f(&x.pods[x.entries[e].pod])
	}
}

func (x *podIndex) has(key string) bool {
	_, ok := x.keys[key]
	return ok
}

func (x *podIndex) count(key string) int {
	n := 0
	x.each(key, func(*Pod) { n++ })
	return n
}

// compiledPolicy is a policy with its validated form at hand.
type compiledPolicy struct {
	*Policy
	v   *validPolicy
	key string // namespace/name, as Rule.Policy names it
}

func (p compiledPolicy) appliesTo(n NetworkID) bool { return slices.Contains(p.Networks, n) }

func newCompiler(s *Snapshot, node string) *compiler {
	// Every pod is in its namespace's index; only some are of the tenants that matter to
	// the node, so that index grows as it needs.
	c := &compiler{
		s:            s,
		podsByNS:     newPodIndex(s.Pods, len(s.Namespaces), len(s.Pods)),
		podsByTenant: newPodIndex(s.Pods, 0, 0),
		tenants:      make(map[string]*Tenant, len(s.Tenants)),
		nsLabels:     make(map[string]map[string]string, len(s.Namespaces)),
		policiesByNS: map[string][]compiledPolicy{},
		nsMatches:    map[string][]string{},
		sets:         map[string]AddrSet{},
		guardNames:   map[guardKey]string{},
		peerNames:    map[peerSelection]string{},
		namedSplits:  map[peerSelection][]portSet{},
	}
	for i := range s.Pods {
		if node != "" && s.Pods[i].Node == node {
			c.local = append(c.local, &s.Pods[i])
		}
	}
	if len(c.local) == 0 {
		return c
	}
	slices.SortFunc(c.local, func(a, b *Pod) int { return comparePodKey(a.PodKey, b.PodKey) })
	for i := range s.Tenants {
		c.tenants[s.Tenants[i].Name] = &s.Tenants[i]
	}
	// Index what the local endpoints need: the policies of their namespaces, the pods of
	// their tenants and their tenants' mutual peers. Pods of any namespace may be a
	// policy's peers.
	namespaces, tenants := map[string]bool{}, map[string]bool{"": true}
	for _, p := range c.local {
		namespaces[p.Namespace] = true
		for _, t := range c.mutualPeers(p.Tenant) {
			tenants[t] = true
		}
	}
	for i := range s.Pods {
		p := &s.Pods[i]
		c.podsByNS.add(p.Namespace, i)
		if tenants[p.Tenant] {
			c.podsByTenant.add(p.Tenant, i)
		}
	}
	for _, ns := range s.Namespaces {
		c.nsLabels[ns.Name] = ns.Labels
	}
	c.indexPolicies(namespaces)
	return c
}

// indexPolicies indexes the policies of the given namespaces, sorted by name in each.
func (c *compiler) indexPolicies(namespaces map[string]bool) {
	for i := range c.s.Policies {
		p := &c.s.Policies[i]
		if !namespaces[p.Namespace] {
			continue
		}
		v := p.valid
		if v == nil {
			v, _ = validate(&p.Spec, nil)
		}
		c.policiesByNS[p.Namespace] = append(c.policiesByNS[p.Namespace],
			compiledPolicy{Policy: p, v: v, key: p.Namespace + "/" + p.Name})
	}
	for _, ps := range c.policiesByNS {
		slices.SortFunc(ps, func(a, b compiledPolicy) int {
			return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(string(a.Kind), string(b.Kind)))
		})
	}
}

func comparePodKey(a, b PodKey) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// eachPeerPod calls f for every pod a peer of pol selects, anywhere in the cluster.
func (c *compiler) eachPeerPod(pol compiledPolicy, peer validPeer, f func(*Pod)) {
	pick := func(p *Pod) {
		if peer.pods.Matches(labels.Set(p.Labels)) {
			f(p)
		}
	}
	if peer.namespaces == nil {
		c.podsByNS.each(pol.Namespace, pick)
		return
	}
	for _, ns := range c.namespacesMatching(peer.namespaces, peer.namespacesKey) {
		c.podsByNS.each(ns, pick)
	}
}

// namespacesMatching returns the namespaces with pods whose labels sel matches; key is
// sel.String(). A selector
// that requires a label value looks its candidates up in an index of namespace labels,
// so selecting a tenant's namespaces does not scan every namespace of the cluster.
func (c *compiler) namespacesMatching(sel labels.Selector, key string) []string {
	if m, ok := c.nsMatches[key]; ok {
		return m
	}
	reqs, selectable := sel.Requirements()
	var candidates []string
	indexed := false
	if selectable {
		for _, r := range reqs {
			if op := r.Operator(); op == selection.Equals || op == selection.DoubleEquals || op == selection.In {
				byValue := c.namespacesByLabel(r.Key())
				for _, v := range r.Values().UnsortedList() {
					candidates = append(candidates, byValue[v]...)
				}
				indexed = true
				break
			}
		}
	}
	if !indexed {
		for ns := range c.podsByNS.keys {
			candidates = append(candidates, ns)
		}
	}
	var out []string
	for _, ns := range candidates {
		if c.podsByNS.has(ns) && sel.Matches(labels.Set(c.nsLabels[ns])) {
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	c.nsMatches[key] = out
	return out
}

// namespacesByLabel indexes the namespaces by their value of one label key.
func (c *compiler) namespacesByLabel(key string) map[string][]string {
	if c.nsByLabel == nil {
		c.nsByLabel = map[string]map[string][]string{}
	}
	byValue, ok := c.nsByLabel[key]
	if !ok {
		byValue = make(map[string][]string, len(c.nsLabels))
		for ns, ls := range c.nsLabels {
			if v, ok := ls[key]; ok {
				byValue[v] = append(byValue[v], ns)
			}
		}
		c.nsByLabel[key] = byValue
	}
	return byValue
}

// podsWithPort returns the pods that have a container port with this name.
func (c *compiler) podsWithPort(name string) []*Pod {
	if c.podsByPort == nil {
		c.podsByPort = map[string][]*Pod{}
		for i := range c.s.Pods {
			p := &c.s.Pods[i]
			for j, np := range p.Ports {
				if !slices.ContainsFunc(p.Ports[:j], func(o NamedPort) bool { return o.Name == np.Name }) {
					c.podsByPort[np.Name] = append(c.podsByPort[np.Name], p)
				}
			}
		}
	}
	return c.podsByPort[name]
}

// mutualPeers returns tenant t and the tenants that t and that name each other as peers,
// sorted. The platform ("") has no peers: it is reached by rule, not by peering.
func (c *compiler) mutualPeers(t string) []string {
	if c.mutual == nil {
		c.mutual = map[string][]string{}
	}
	if m, ok := c.mutual[t]; ok {
		return m
	}
	out := []string{t}
	if tt := c.tenants[t]; tt != nil && t != "" {
		for _, q := range tt.Peers {
			if q == t || q == "" {
				continue
			}
			if tq := c.tenants[q]; tq != nil && slices.Contains(tq.Peers, t) {
				out = append(out, q)
			}
		}
	}
	slices.Sort(out[1:])
	out = slices.Compact(out)
	c.mutual[t] = out
	return out
}
