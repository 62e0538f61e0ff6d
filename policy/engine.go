package policy

// The engine keeps a node's rules in step with the cluster.
//
// Inputs come from two places. A Source (informer caches) says what the cluster holds:
// tenants, namespaces, policies, every pod's addresses. The node's own pods are registered
// by the CNI server itself (Admit at ADD, Release at DEL, Restore from the attachment ledger
// at start), because a pod being added is not in any cache yet with its addresses, and its
// rules must be in place before ADD returns.
//
// Every change compiles the whole snapshot (Compile is cheap and pure), renders each
// enforcement point and hands it to that point's Applier, which writes only the difference
// as one nftables transaction. An Applier whose table was changed behind its back is
// found by Verify and rewritten in full.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Source is what the engine knows about the cluster.
type Source interface {
	// Snapshot returns the cluster as the caches see it now.
	Snapshot() Snapshot
	// Changed receives a value after the caches changed.
	Changed() <-chan struct{}
}

// LocalPod is a pod of this node as its CNI ADD made it: its attachments, with the host side
// of the primary veth, and the network namespace its secondary rules go into.
type LocalPod struct {
	ContainerID string
	Netns       string
	Pod         Pod
}

// Engine enforces tenants and policies for the pods of one node.
type Engine struct {
	node string
	open WriterFactory
	src  Source
	log  *slog.Logger

	mu    sync.Mutex
	local map[string]LocalPod // by container ID
	host  TableWriter
	hostC SetCache
	pods  map[PodKey]*podPoint
	// statsMu guards stats, so that Stats never waits behind a sync that runs nft.
	statsMu sync.Mutex
	stats   Stats
	// retry is signalled when a sync left an enforcement point unwritten that no caller
	// was told of; Run tries again a second later.
	retry chan struct{}
	// cleanup counts the removals of released pods' tables still running; removing maps
	// the network namespace of each to a channel closed when it is done, so that a pod
	// admitted again into that namespace waits for it rather than lose its new tables.
	cleanup    sync.WaitGroup
	removingMu sync.Mutex
	removing   map[string]chan struct{}
}

// cleanupTimeout bounds the removal of a released pod's tables.
const cleanupTimeout = 30 * time.Second

// podPoint is the enforcement point inside one pod's network namespace: the "inet loom"
// table of its secondary endpoints and the "netdev loom" table of its interfaces' links.
type podPoint struct {
	netns string
	cache SetCache
	inet  tablePoint
	link  tablePoint
}

// tablePoint is one table of an enforcement point and what was last applied to it.
type tablePoint struct {
	applier TableWriter
	applied *NftTable
}

// apply writes want unless it is what was applied last; an empty want removes the table.
func (tp *tablePoint) apply(ctx context.Context, want NftTable) error {
	if len(want.Chains) == 0 && len(want.Sets) == 0 {
		return tp.remove(ctx)
	}
	if tp.applied != nil && tp.applied.Equal(want) {
		return nil
	}
	if err := tp.applier.Apply(ctx, want); err != nil {
		tp.applied = nil
		return err
	}
	tp.applied = &want
	return nil
}

// remove deletes the table if anything was applied to it, or if that is not known.
func (tp *tablePoint) remove(ctx context.Context) error {
	if tp.applied != nil && len(tp.applied.Chains) == 0 && len(tp.applied.Sets) == 0 {
		return nil
	}
	if err := tp.applier.Delete(ctx); err != nil {
		return err
	}
	tp.applied = &NftTable{}
	return nil
}

// verify checks the kernel's table against what was applied; on a difference it forgets
// what was applied, so that the next sync rewrites it.
func (tp *tablePoint) verify(ctx context.Context) error {
	if tp.applied != nil && len(tp.applied.Chains) == 0 && len(tp.applied.Sets) == 0 {
		return nil
	}
	if err := tp.applier.Verify(ctx); err != nil {
		tp.applier.Reset()
		tp.applied = nil
		return err
	}
	return nil
}

// Stats says what the engine did, in total and last.
type Stats struct {
	// Syncs counts the syncs (compile, render, apply); Failures those that left an
	// enforcement point unwritten. SyncTime is the time all of them took.
	Syncs, Failures int
	SyncTime        time.Duration
	// LastSync is how long the last sync took, LastSyncEnd when it ended, and LastError
	// what it could not write ("" when it wrote everything).
	LastSync    time.Duration
	LastSyncEnd time.Time
	LastError   string
	// Repairs counts the tables rewritten because the kernel's had drifted from them.
	Repairs int
	// HostRules counts the rules of the node's table, PodRules those of the pods' own
	// tables (secondary interfaces) as last applied.
	HostRules, PodRules int
	// LocalPods counts the pods of this node the engine enforces for, PodTables those that
	// have a table in their own network namespace.
	LocalPods int
	PodTables int
}

// TableWriter keeps one table of one network namespace in step with what it is given:
// Applier, with nft and the kernel; a fake in tests that need no root.
type TableWriter interface {
	// Apply makes the table want, in one transaction.
	Apply(ctx context.Context, want NftTable) error
	// Verify returns an error wrapping ErrDrift when the kernel's table is not the one
	// last applied.
	Verify(ctx context.Context) error
	// Reset forgets what was applied: the next Apply writes the table whole.
	Reset()
	// Delete removes the table; a table or namespace already gone is success.
	Delete(ctx context.Context) error
}

var _ TableWriter = (*Applier)(nil)

// WriterFactory opens the TableWriter of the table of family ("" for inet, "netdev" for a
// pod's link rules) in the network namespace at netns ("" for the engine's own).
type WriterFactory func(netns, family string) TableWriter

// NewEngine returns an engine for node that runs the nft binary at nftPath. The node's own
// rules go into the network namespace at hostNetns ("" for loomd's own).
func NewEngine(node, nftPath, hostNetns string, src Source, log *slog.Logger) *Engine {
	log = log.With("component", "policy")
	open := func(netns, family string) TableWriter {
		if family == nftLinkFamily {
			return NewLinkApplier(nftPath, netns, log)
		}
		return NewApplier(nftPath, netns, log)
	}
	return NewEngineWith(node, hostNetns, src, open, log)
}

// NewEngineWith is NewEngine writing its tables through the writers open returns.
func NewEngineWith(node, hostNetns string, src Source, open WriterFactory, log *slog.Logger) *Engine {
	return &Engine{
		node:  node,
		open:  open,
		src:   src,
		log:   log,
		local: map[string]LocalPod{},
		host:  open(hostNetns, ""),
		pods:  map[PodKey]*podPoint{},
		retry: make(chan struct{}, 1),
	}
}

// Restore makes pods, the attachment ledger's records, the node's pods and applies: what a
// restarted loomd does before it serves ADDs (its first apply rewrites every table in full),
// and what follows a GC that released containers.
func (e *Engine) Restore(ctx context.Context, pods []LocalPod) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.local = map[string]LocalPod{}
	for _, p := range pods {
		e.local[p.ContainerID] = p
	}
	return e.sync(ctx).err()
}

// Admit registers a pod just attached and writes its rules; when it returns nil the pod's
// traffic is under its tenant's and its policies' rules. On failure the pod is forgotten
// again and the caller tears its attachments down.
func (e *Engine) Admit(ctx context.Context, p LocalPod) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	prev, had := e.local[p.ContainerID]
	e.local[p.ContainerID] = p
	// Only the node's table and the pod's own decide: another pod's table that cannot be
	// written is that pod's trouble, retried in the background.
	if err := e.sync(ctx).of(p.Pod.PodKey); err != nil {
		if had {
			e.local[p.ContainerID] = prev
		} else {
			delete(e.local, p.ContainerID)
		}
		return fmt.Errorf("apply the rules of pod %s: %w", p.Pod.PodKey, err)
	}
	return nil
}

// Release forgets a pod of this node and removes its rules. Releasing a pod the engine does
// not know is not an error.
func (e *Engine) Release(ctx context.Context, containerID string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.local[containerID]; !ok {
		return nil
	}
	delete(e.local, containerID)
	return e.sync(ctx).host
}

// Run resyncs whenever the source changes, and every verifyEvery checks that the kernel still
// holds what was applied, rewriting what someone changed. It returns when ctx is done.
func (e *Engine) Run(ctx context.Context, verifyEvery time.Duration) {
	verify := time.NewTicker(verifyEvery)
	defer verify.Stop()
	retry := time.NewTimer(0)
	<-retry.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.src.Changed():
		case <-retry.C:
		case <-e.retry:
			retry.Reset(time.Second)
			continue
		case <-verify.C:
			e.repair(ctx)
		}
		e.mu.Lock()
		err := e.sync(ctx).err()
		e.mu.Unlock()
		if err != nil {
			e.log.Error("apply policy", "error", err)
			retry.Reset(time.Second)
		}
	}
}

// Stats returns what the engine did. It does not wait for a sync in progress.
func (e *Engine) Stats() Stats {
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	return e.stats
}

// repair rewrites every enforcement point whose kernel state drifted from what was applied.
func (e *Engine) repair(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.host.Verify(ctx); err != nil {
		e.log.Warn("node rules changed outside loomd; rewriting them", "error", err)
		e.host.Reset()
		e.repaired()
	}
	for key, pt := range e.pods {
		if err := errors.Join(pt.inet.verify(ctx), pt.link.verify(ctx)); err != nil {
			e.log.Warn("pod rules changed outside loomd; rewriting them", "namespace", key.Namespace, "pod", key.Name, "error", err)
			e.repaired()
		}
	}
}

func (e *Engine) repaired() {
	e.statsMu.Lock()
	e.stats.Repairs++
	e.statsMu.Unlock()
}

// syncResult is what one sync could not write: the node's table, and pods' tables.
type syncResult struct {
	host error
	pods map[PodKey]error
}

// of is the error that concerns the pod key: the node's table's or its own.
func (r syncResult) of(key PodKey) error { return errors.Join(r.host, r.pods[key]) }

// err is every error of the sync.
func (r syncResult) err() error {
	errs := []error{r.host}
	for _, key := range slices.SortedFunc(maps.Keys(r.pods), comparePodKeys) {
		errs = append(errs, r.pods[key])
	}
	return errors.Join(errs...)
}

func comparePodKeys(a, b PodKey) int { return strings.Compare(a.String(), b.String()) }

// sync compiles the snapshot with the local pods in it and applies every enforcement point
// that changed. A local pod whose network namespace is gone is forgotten first: its sandbox
// was torn down while loomd was not looking. The caller holds e.mu.
func (e *Engine) sync(ctx context.Context) syncResult {
	start := time.Now()
	e.forgetVanished()
	rs := Compile(e.snapshot(), e.node)
	host := e.hostC.Render(rs.Host, HostTable)
	res := syncResult{host: e.host.Apply(ctx, host), pods: map[PodKey]error{}}
	netns := map[PodKey]string{}
	for _, p := range e.local {
		netns[p.Pod.PodKey] = p.Netns
	}
	for _, key := range slices.SortedFunc(maps.Keys(rs.Pods), comparePodKeys) {
		if perr := e.applyPod(ctx, key, netns[key], rs.Pods[key]); perr != nil {
			res.pods[key] = perr
		}
	}
	for key, pt := range e.pods {
		if _, ok := rs.Pods[key]; !ok {
			// The pod is gone, or has no interface any more: its netns, if it still exists,
			// keeps no rules of ours. Removing a table whose chains hook an interface waits
			// for the kernel's grace periods, and the namespace usually dies with its
			// sandbox right after DEL: that happens beside the caller, not in its way.
			delete(e.pods, key)
			e.removeLater(ctx, key, pt)
		}
	}
	err := res.err()
	e.recordSync(time.Since(start), ruleCount(host), err)
	if err != nil {
		select {
		case e.retry <- struct{}{}:
		default:
		}
	}
	return res
}

// recordSync updates the stats after a sync that took took, applied hostRules to the node's
// table and failed with err. The caller holds e.mu.
func (e *Engine) recordSync(took time.Duration, hostRules int, err error) {
	podRules := 0
	for _, pt := range e.pods {
		for _, tp := range []tablePoint{pt.inet, pt.link} {
			if tp.applied != nil {
				podRules += ruleCount(*tp.applied)
			}
		}
	}
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	st := &e.stats
	st.Syncs++
	st.SyncTime += took
	st.LastSync = took
	st.LastSyncEnd = time.Now()
	st.LocalPods = len(e.local)
	st.PodTables = len(e.pods)
	st.HostRules, st.PodRules = hostRules, podRules
	st.LastError = ""
	if err != nil {
		st.Failures++
		st.LastError = err.Error()
	}
}

// forgetVanished drops the local pods whose network namespace no longer exists. The caller
// holds e.mu.
func (e *Engine) forgetVanished() {
	for id, p := range e.local {
		if p.Netns == "" {
			continue
		}
		if _, err := os.Stat(p.Netns); errors.Is(err, fs.ErrNotExist) {
			e.log.Info("forgetting a pod whose network namespace is gone", "namespace", p.Pod.Namespace, "pod", p.Pod.Name, "netns", p.Netns)
			delete(e.local, id)
		}
	}
}

// removeLater removes a released pod's tables in the background. The caller holds e.mu.
func (e *Engine) removeLater(ctx context.Context, key PodKey, pt *podPoint) {
	done := make(chan struct{})
	e.removingMu.Lock()
	if e.removing == nil {
		e.removing = map[string]chan struct{}{}
	}
	prev := e.removing[pt.netns]
	e.removing[pt.netns] = done
	e.removingMu.Unlock()
	e.cleanup.Add(1)
	go func() {
		defer e.cleanup.Done()
		defer func() {
			e.removingMu.Lock()
			if e.removing[pt.netns] == done {
				delete(e.removing, pt.netns)
			}
			e.removingMu.Unlock()
			close(done)
		}()
		if prev != nil {
			<-prev
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if derr := errors.Join(pt.inet.applier.Delete(rctx), pt.link.applier.Delete(rctx)); derr != nil {
			e.log.Debug("remove a pod's rules", "namespace", key.Namespace, "pod", key.Name, "error", derr)
		}
	}()
}

// awaitRemoval waits until no removal of tables in netns is running.
func (e *Engine) awaitRemoval(netns string) {
	e.removingMu.Lock()
	done := e.removing[netns]
	e.removingMu.Unlock()
	if done != nil {
		<-done
	}
}

func (e *Engine) applyPod(ctx context.Context, key PodKey, netns string, t Table) error {
	if netns == "" {
		if len(t.Endpoints) == 0 {
			return nil // a pod known without its sandbox: no interface to keep honest
		}
		return fmt.Errorf("pod %s: no network namespace known for its secondary interfaces", key)
	}
	pt := e.pods[key]
	if pt == nil || pt.netns != netns {
		e.awaitRemoval(netns)
		pt = &podPoint{netns: netns,
			inet: tablePoint{applier: e.open(netns, "")},
			link: tablePoint{applier: e.open(netns, nftLinkFamily)}}
		e.pods[key] = pt
	}
	var inet NftTable
	if len(t.Endpoints) > 0 {
		inet = pt.cache.Render(t, PodTable)
	}
	if err := errors.Join(pt.inet.apply(ctx, inet), pt.link.apply(ctx, RenderLinks(t))); err != nil {
		return fmt.Errorf("pod %s: %w", key, err)
	}
	return nil
}

// snapshot is the source's snapshot with the local pods as their ADDs made them: a local
// pod's endpoints come from its attachments, which the caches may not show yet.
func (e *Engine) snapshot() Snapshot {
	s := e.src.Snapshot()
	local := make(map[PodKey]int, len(e.local))
	for _, lp := range e.local {
		local[lp.Pod.PodKey] = -1
	}
	onNode := false
	for i := range s.Pods {
		p := &s.Pods[i]
		if _, ok := local[p.PodKey]; ok {
			local[p.PodKey] = i
		}
		onNode = onNode || p.Node == e.node
	}
	if onNode {
		// The source lists this node's pods as this node's. Those no ADD registered (their
		// sandbox is gone, or is being replaced) have no interface or netns here to write
		// rules for, and the registered ones come from the registry: all of them stay in
		// the snapshot as peers only, on a copy, since the source may share its snapshot.
		s.Pods = slices.Clone(s.Pods)
		for i := range s.Pods {
			if s.Pods[i].Node == e.node {
				s.Pods[i].Node = ""
			}
		}
	}
	tenantOf := map[string]string{}
	for _, ns := range s.Namespaces {
		tenantOf[ns.Name] = ns.Tenant
	}
	// The registered pods are added as this node's. A source that leaves room after its
	// pods (ClusterSource does) is appended to without a copy: only the engine, under its
	// lock, ever writes past the source's length.
	for _, id := range slices.Sorted(maps.Keys(e.local)) {
		lp := e.local[id].Pod
		lp.Node = e.node
		lp.Tenant = tenantOf[lp.Namespace]
		if i := local[lp.PodKey]; i >= 0 {
			cached := s.Pods[i]
			if lp.Labels == nil {
				lp.Labels = cached.Labels
			}
			if lp.Ports == nil {
				lp.Ports = cached.Ports
			}
			lp.Tenant = cached.Tenant
		}
		s.Pods = append(s.Pods, lp)
	}
	return s
}

func ruleCount(t NftTable) int {
	n := 0
	for _, c := range t.Chains {
		n += len(c.Rules)
	}
	return n
}
