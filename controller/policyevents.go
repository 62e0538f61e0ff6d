package controller

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/loom-cni/loom/policy"
)

// reasonInvalidPolicy is the reason of the Warning event on a policy with unusable parts.
const reasonInvalidPolicy = "InvalidPolicy"

// maxEventMessage keeps an event's message within what the API server accepts.
const maxEventMessage = 1000

// policyEvents tells the owners of NetworkPolicies and MultiNetworkPolicies, with a Warning
// event on the object, which parts of a policy the engine cannot use (and so allows nothing
// through): a bad CIDR, port or selector must not go unnoticed in a node's log. Each
// generation of a policy is reported once.
type policyEvents struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
	log  *slog.Logger

	mu       sync.Mutex
	reported map[types.UID]int64 // generation last reported
}

func newPolicyEvents(kube kubernetes.Interface, dyn dynamic.Interface, log *slog.Logger) *policyEvents {
	return &policyEvents{kube: kube, dyn: dyn, log: log, reported: map[types.UID]int64{}}
}

// run watches policies until ctx is done.
func (p *policyEvents) run(ctx context.Context) {
	b := record.NewBroadcaster(record.WithContext(ctx))
	defer b.Shutdown()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: p.kube.CoreV1().Events("")})
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "loom-controller"})

	kf := informers.NewSharedInformerFactory(p.kube, 0)
	nps := kf.Networking().V1().NetworkPolicies().Informer()
	p.handle(nps, func(o any) (runtime.Object, metav1.Object, policy.Policy, bool) {
		np, ok := o.(*networkingv1.NetworkPolicy)
		if !ok {
			return nil, nil, policy.Policy{}, false
		}
		return np, np, policy.FromNetworkPolicy(np), true
	}, rec)
	df := dynamicinformer.NewDynamicSharedInformerFactory(p.dyn, 0)
	mnps := df.ForResource(policy.MultiNetworkPolicyGVR).Informer()
	p.handle(mnps, func(o any) (runtime.Object, metav1.Object, policy.Policy, bool) {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			return nil, nil, policy.Policy{}, false
		}
		return u, u, policy.FromMultiNetworkPolicy(u), true
	}, rec)
	kf.Start(ctx.Done())
	df.Start(ctx.Done())
	<-ctx.Done()
	kf.Shutdown()
	df.Shutdown()
}

func (p *policyEvents) handle(inf cache.SharedIndexInformer, parse func(any) (runtime.Object, metav1.Object, policy.Policy, bool), rec record.EventRecorder) {
	check := func(o any) {
		obj, meta, pol, ok := parse(o)
		if !ok {
			return
		}
		if reason, message, report := p.judge(meta, pol); report {
			p.log.Info("policy has unusable parts", "kind", pol.Kind, "namespace", pol.Namespace, "policy", pol.Name, "problems", message)
			rec.Event(obj, corev1.EventTypeWarning, reason, message)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    check,
		UpdateFunc: func(_, o any) { check(o) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if m, ok := o.(metav1.Object); ok {
				p.mu.Lock()
				delete(p.reported, m.GetUID())
				p.mu.Unlock()
			}
		},
	})
}

// judge decides whether a policy's generation deserves an event, and with what message.
func (p *policyEvents) judge(meta metav1.Object, pol policy.Policy) (reason, message string, report bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(pol.Problems) == 0 {
		delete(p.reported, meta.GetUID())
		return "", "", false
	}
	if gen, ok := p.reported[meta.GetUID()]; ok && gen == meta.GetGeneration() {
		return "", "", false
	}
	p.reported[meta.GetUID()] = meta.GetGeneration()
	message = "parts of this policy cannot be used and allow nothing: " + strings.Join(pol.Problems, "; ")
	if len(message) > maxEventMessage {
		message = message[:maxEventMessage-3] + "..."
	}
	return reasonInvalidPolicy, message, true
}
