package controller

// The Tenant status controller runs on the leader. For each Tenant it reports the
// namespaces it owns, the pods in them and the addresses those pods hold, and whether its
// spec is valid and its namespaces are its alone. Work is keyed by tenant name in a
// rate-limited queue: a pod change touches its namespace's tenant, a Tenant or namespace
// change may move namespaces between tenants and touches them all (the key allTenants), and
// so does every resync. A status is written only when it changed, so a resync of an idle
// cluster writes nothing.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/loom-cni/loom/metrics"
	"github.com/loom-cni/loom/tenants"
)

// tenantStatus computes a Tenant's status from the directory and the pods of each
// namespace. Conditions keep their last transition time unless their status changes, when
// it becomes now; conditions of other types are kept as they are.
func tenantStatus(obj *tenants.Object, dir *tenants.Directory, podsIn func(namespace string) []*corev1.Pod, now time.Time) tenants.Status {
	name := tenants.Name(obj.Name)
	_, problems := tenants.Parse(obj)
	st := tenants.Status{Namespaces: dir.Members(name)}
	addrs := map[netip.Addr]bool{}
	for _, ns := range st.Namespaces {
		for _, p := range podsIn(ns) {
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			st.Pods++
			for _, a := range podAddresses(p) {
				addrs[a] = true
			}
		}
	}
	st.Addresses = len(addrs)
	st.Conditions = slices.Clone(obj.Status.Conditions)
	at := metav1.NewTime(now.Truncate(time.Second))
	for _, c := range []metav1.Condition{
		tenants.ValidCondition(obj.Generation, problems),
		tenants.NamespacesConflictCondition(obj.Generation, dir.Conflicts(name)),
	} {
		c.LastTransitionTime = at
		meta.SetStatusCondition(&st.Conditions, c)
	}
	return st
}

// podAddresses returns the addresses a pod holds: its primary addresses (status.podIPs) and
// those of every attachment in its network-status annotation. A malformed annotation or
// address adds nothing.
func podAddresses(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParsePrefix(s); err == nil {
			out = append(out, a.Addr())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	if v, ok := p.Annotations[nadv1.NetworkStatusAnnot]; ok {
		var st []struct {
			IPs []string `json:"ips"`
		}
		if json.Unmarshal([]byte(v), &st) == nil {
			for _, s := range st {
				for _, ip := range s.IPs {
					add(ip)
				}
			}
		}
	}
	return out
}

// statusWarnings returns the Warning events a status change deserves: the spec became
// invalid, or a namespace became shared with another tenant.
func statusWarnings(old, cur tenants.Status) (reasons, messages []string) {
	for _, w := range []struct {
		cond   string
		status metav1.ConditionStatus
	}{{tenants.ConditionValid, metav1.ConditionFalse}, {tenants.ConditionNamespacesConflict, metav1.ConditionTrue}} {
		c := meta.FindStatusCondition(cur.Conditions, w.cond)
		if c == nil || c.Status != w.status {
			continue
		}
		if o := meta.FindStatusCondition(old.Conditions, w.cond); o != nil && o.Status == w.status && o.Message == c.Message {
			continue
		}
		reasons, messages = append(reasons, c.Reason), append(messages, c.Message)
	}
	return reasons, messages
}

// allTenants is the queue key that stands for every Tenant.
const allTenants tenants.Name = ""

// tenantStatusController keeps every Tenant's status current while this replica leads.
type tenantStatusController struct {
	caches   *clusterCaches
	kube     kubernetes.Interface
	dyn      dynamic.Interface
	interval time.Duration
	metrics  *metrics.Controller
	log      *slog.Logger
}

// run keeps statuses current until ctx ends.
func (c *tenantStatusController) run(ctx context.Context) {
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[tenants.Name]())
	defer queue.ShutDown()
	everyone := func() { queue.Add(allTenants) }
	all := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { everyone() }, UpdateFunc: func(any, any) { everyone() }, DeleteFunc: func(any) { everyone() },
	}
	var regs []func()
	for _, inf := range []cache.SharedIndexInformer{c.caches.ts, c.caches.nss} {
		reg, err := inf.AddEventHandler(all)
		if err != nil {
			c.log.Error("watch for tenant status", "error", err)
			return
		}
		regs = append(regs, func() { inf.RemoveEventHandler(reg) })
	}
	defer func() {
		for _, r := range regs {
			r()
		}
	}()
	onPod := func(o any) {
		if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		if p, ok := o.(*corev1.Pod); ok {
			if t, ok := c.caches.directory().TenantOf(p.Namespace); ok {
				queue.Add(t.Name)
			}
		}
	}
	podReg, err := c.caches.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onPod, UpdateFunc: func(_, o any) { onPod(o) }, DeleteFunc: onPod})
	if err != nil {
		c.log.Error("watch pods for tenant status", "error", err)
		return
	}
	defer c.caches.pods.RemoveEventHandler(podReg)
	if !c.caches.waitSynced(ctx) {
		return
	}
	b := record.NewBroadcaster(record.WithContext(ctx))
	defer b.Shutdown()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events("")})
	w := &statusWriter{caches: c.caches, dyn: c.dyn, metrics: c.metrics,
		events: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "loom-controller"}), log: c.log}

	go func() {
		tick := time.NewTicker(c.interval)
		defer tick.Stop()
		for {
			everyone()
			select {
			case <-ctx.Done():
				queue.ShutDown()
				return
			case <-tick.C:
			}
		}
	}()
	for c.next(ctx, queue, w) {
	}
}

// next handles one key of the queue; it returns false once the queue is shut down.
func (c *tenantStatusController) next(ctx context.Context, queue workqueue.TypedRateLimitingInterface[tenants.Name], w *statusWriter) bool {
	name, quit := queue.Get()
	if quit {
		return false
	}
	defer queue.Done(name)
	if name == allTenants {
		for _, k := range c.caches.ts.GetStore().ListKeys() {
			queue.Add(tenants.Name(k))
		}
		return true
	}
	if err := w.write(ctx, name); err != nil {
		// A conflict means the cache was a write behind (ours, or a spec change): the retry
		// reads the newer object.
		lvl := slog.LevelWarn
		if apierrors.IsConflict(err) {
			lvl = slog.LevelDebug
		}
		c.log.Log(ctx, lvl, "update tenant status", "tenant", string(name), "error", err)
		queue.AddRateLimited(name)
		return true
	}
	queue.Forget(name)
	return true
}

// statusWriter computes and writes one Tenant's status.
type statusWriter struct {
	caches  *clusterCaches
	dyn     dynamic.Interface
	events  record.EventRecorder
	metrics *metrics.Controller
	log     *slog.Logger
}

func (w *statusWriter) write(ctx context.Context, name tenants.Name) error {
	o, exists, err := w.caches.ts.GetStore().GetByKey(string(name))
	if err != nil || !exists {
		return err
	}
	obj, err := tenants.FromUnstructured(o)
	if err != nil {
		return err
	}
	st := tenantStatus(obj, w.caches.directory(), w.caches.podsIn, time.Now())
	if equality.Semantic.DeepEqual(obj.Status, st) {
		return nil
	}
	old := obj.Status
	obj.Status = st
	u, err := obj.ToUnstructured()
	if err != nil {
		return err
	}
	_, err = w.dyn.Resource(tenants.GVR).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	w.metrics.TenantStatusWritten(err)
	if err != nil {
		return fmt.Errorf("update status of Tenant %s: %w", name, err)
	}
	w.log.Debug("tenant status updated", "tenant", string(name), "namespaces", len(st.Namespaces), "pods", st.Pods, "addresses", st.Addresses)
	reasons, messages := statusWarnings(old, st)
	for i := range reasons {
		w.log.Info("tenant needs attention", "tenant", string(name), "reason", reasons[i], "message", messages[i])
		w.events.Event(o.(runtime.Object), corev1.EventTypeWarning, reasons[i], messages[i])
	}
	return nil
}
