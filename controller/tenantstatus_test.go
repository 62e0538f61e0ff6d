package controller

import (
	"slices"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/tenants"
)

func statusPod(ns, name string, phase corev1.PodPhase, podIPs []string, networkStatus string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Status: corev1.PodStatus{Phase: phase}}
	for _, ip := range podIPs {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if networkStatus != "" {
		p.Annotations = map[string]string{nadv1.NetworkStatusAnnot: networkStatus}
	}
	return p
}

func TestTenantStatus(t *testing.T) {
	now := time.Date(2026, 11, 2, 9, 30, 15, 500, time.UTC)
	earlier := metav1.NewTime(time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC))
	validBefore := []metav1.Condition{
		{Type: tenants.ConditionValid, Status: metav1.ConditionTrue, Reason: tenants.ReasonValidSpec, Message: "the spec is valid", LastTransitionTime: earlier, ObservedGeneration: 1},
		{Type: "Custom", Status: metav1.ConditionTrue, Reason: "Mine", LastTransitionTime: earlier},
	}
	pods := []*corev1.Pod{
		statusPod("ta", "web", corev1.PodRunning, []string{"10.244.1.5"},
			`[{"name":"loom","ips":["10.244.1.5"],"default":true},{"name":"ta/net-a","interface":"net1","ips":["192.168.10.4","fd00::4"]}]`),
		statusPod("ta2", "db", corev1.PodPending, []string{"10.244.1.6"}, `not JSON`),
		statusPod("ta", "done", corev1.PodSucceeded, []string{"10.244.1.7"}, ""),
		statusPod("ta", "gone", corev1.PodFailed, nil, ""),
		statusPod("ta", "new", "", nil, ""),
		statusPod("tb", "other", corev1.PodRunning, []string{"10.244.2.1"}, ""),
		statusPod("both", "x", corev1.PodRunning, []string{"10.244.3.1"}, ""),
	}
	podsIn := func(ns string) []*corev1.Pod {
		return slices.DeleteFunc(slices.Clone(pods), func(p *corev1.Pod) bool { return p.Namespace != ns })
	}
	namespaces := map[string]map[string]string{
		"ta": {"tenant": "a"}, "ta2": {"tenant": "a"}, "tb": {"tenant": "b"}, "both": {"tenant": "a", "team": "b"}, "kube-system": nil,
	}
	a := tenantObject("a", tenants.Spec{})
	a.Status.Conditions = validBefore
	b := tenantObject("b", tenants.Spec{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "tenant", Operator: metav1.LabelSelectorOpIn, Values: []string{"b"}},
	}}})
	bad := tenantObject("bad", tenants.Spec{VLANs: []string{"5000"}})
	bad.Generation = 3
	bad.Status.Conditions = validBefore
	greedy := tenantObject("greedy", tenants.Spec{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}})

	type cond struct {
		status metav1.ConditionStatus
		reason string
		says   []string
		since  metav1.Time
	}
	for _, tc := range []struct {
		name       string
		all        []*tenants.Object
		of         *tenants.Object
		namespaces []string
		pods       int
		addresses  int
		valid      cond
		conflict   cond
	}{
		{name: "pods and addresses of every namespace, terminated pods left out, each address once",
			all: []*tenants.Object{a, b}, of: a, namespaces: []string{"both", "ta", "ta2"}, pods: 4, addresses: 5,
			valid:    cond{metav1.ConditionTrue, tenants.ReasonValidSpec, nil, earlier},
			conflict: cond{metav1.ConditionFalse, tenants.ReasonNoConflict, nil, metav1.NewTime(now.Truncate(time.Second))}},
		{name: "a namespace two tenants select belongs to neither",
			all: []*tenants.Object{a, b, greedy}, of: a, namespaces: []string{"ta", "ta2"}, pods: 3, addresses: 4,
			valid:    cond{metav1.ConditionTrue, tenants.ReasonValidSpec, nil, earlier},
			conflict: cond{metav1.ConditionTrue, tenants.ReasonSharedSelected, []string{"both", "greedy"}, metav1.NewTime(now.Truncate(time.Second))}},
		{name: "the other side of the conflict",
			all: []*tenants.Object{a, b, greedy}, of: greedy, namespaces: nil,
			valid:    cond{metav1.ConditionTrue, tenants.ReasonValidSpec, nil, metav1.NewTime(now.Truncate(time.Second))},
			conflict: cond{metav1.ConditionTrue, tenants.ReasonSharedSelected, []string{"both", " a"}, metav1.NewTime(now.Truncate(time.Second))}},
		{name: "an invalid spec", all: []*tenants.Object{a, b, bad}, of: bad, namespaces: nil,
			valid:    cond{metav1.ConditionFalse, tenants.ReasonInvalidSpec, []string{"spec.vlans[0]", "5000"}, metav1.NewTime(now.Truncate(time.Second))},
			conflict: cond{metav1.ConditionFalse, tenants.ReasonNoConflict, nil, metav1.NewTime(now.Truncate(time.Second))}},
		{name: "a tenant whose namespaces hold no pod", all: []*tenants.Object{a, b}, of: b, namespaces: []string{"tb"}, pods: 1, addresses: 1,
			valid:    cond{metav1.ConditionTrue, tenants.ReasonValidSpec, nil, metav1.NewTime(now.Truncate(time.Second))},
			conflict: cond{metav1.ConditionFalse, tenants.ReasonNoConflict, nil, metav1.NewTime(now.Truncate(time.Second))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ts []tenants.Tenant
			for _, o := range tc.all {
				tn, _ := tenants.Parse(o)
				ts = append(ts, tn)
			}
			st := tenantStatus(tc.of, tenants.NewDirectory(ts, namespaces), podsIn, now)
			if !slices.Equal(st.Namespaces, tc.namespaces) || st.Pods != tc.pods || st.Addresses != tc.addresses {
				t.Errorf("namespaces %v, pods %d, addresses %d; want %v, %d, %d", st.Namespaces, st.Pods, st.Addresses, tc.namespaces, tc.pods, tc.addresses)
			}
			for typ, want := range map[string]cond{tenants.ConditionValid: tc.valid, tenants.ConditionNamespacesConflict: tc.conflict} {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil {
					t.Errorf("no %s condition", typ)
					continue
				}
				if c.Status != want.status || c.Reason != want.reason || !c.LastTransitionTime.Equal(&want.since) || c.ObservedGeneration != tc.of.Generation {
					t.Errorf("%s: %s %s since %s (generation %d), want %s %s since %s", typ, c.Status, c.Reason, c.LastTransitionTime, c.ObservedGeneration,
						want.status, want.reason, want.since)
				}
				for _, w := range want.says {
					if !strings.Contains(c.Message, w) {
						t.Errorf("%s message %q does not say %q", typ, c.Message, w)
					}
				}
			}
			if len(tc.of.Status.Conditions) > 0 && meta.FindStatusCondition(st.Conditions, "Custom") == nil {
				t.Error("a condition of another type was dropped")
			}
		})
	}
}

func TestStatusWarnings(t *testing.T) {
	valid := tenants.ValidCondition(1, nil)
	invalid := tenants.ValidCondition(1, []tenants.Problem{{Field: "spec.vlans[0]", Message: "bad"}})
	invalidOther := tenants.ValidCondition(2, []tenants.Problem{{Field: "spec.vlans[1]", Message: "bad"}})
	clear := tenants.NamespacesConflictCondition(1, nil)
	conflict := tenants.NamespacesConflictCondition(1, map[string][]tenants.Name{"ns": {"b"}})
	for _, tc := range []struct {
		name     string
		old, cur []metav1.Condition
		reasons  []string
	}{
		{"first status of a valid tenant", nil, []metav1.Condition{valid, clear}, nil},
		{"first status of an invalid tenant", nil, []metav1.Condition{invalid, clear}, []string{tenants.ReasonInvalidSpec}},
		{"becomes invalid", []metav1.Condition{valid, clear}, []metav1.Condition{invalid, clear}, []string{tenants.ReasonInvalidSpec}},
		{"stays invalid the same way", []metav1.Condition{invalid, clear}, []metav1.Condition{invalid, clear}, nil},
		{"invalid in another way", []metav1.Condition{invalid, clear}, []metav1.Condition{invalidOther, clear}, []string{tenants.ReasonInvalidSpec}},
		{"becomes conflicted", []metav1.Condition{valid, clear}, []metav1.Condition{valid, conflict}, []string{tenants.ReasonSharedSelected}},
		{"recovers", []metav1.Condition{invalid, conflict}, []metav1.Condition{valid, clear}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reasons, messages := statusWarnings(tenants.Status{Conditions: tc.old}, tenants.Status{Conditions: tc.cur})
			if !slices.Equal(reasons, tc.reasons) || len(messages) != len(reasons) {
				t.Errorf("warnings %v (%v), want %v", reasons, messages, tc.reasons)
			}
		})
	}
}

func TestSlimPodKeepsWhatTheStatusAndTheQuotaNeed(t *testing.T) {
	p := statusPod("ta", "web", corev1.PodRunning, []string{"10.244.1.5"}, `[{"name":"x","ips":["192.168.1.1"]}]`)
	p.Annotations["other"] = "dropped"
	p.Spec.Containers = []corev1.Container{{Name: "app", Image: "x", Env: []corev1.EnvVar{{Name: "TOKEN", Value: "secret"}},
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("1"), "loom.dev/sriov_a": resource.MustParse("2")}}}}
	o, err := slimPod(p)
	if err != nil {
		t.Fatal(err)
	}
	s := o.(*corev1.Pod)
	if len(s.Spec.Containers) != 1 || s.Spec.Containers[0].Image != "" || s.Spec.Containers[0].Env != nil ||
		len(s.Annotations) != 1 || s.Name != "web" || s.Namespace != "ta" {
		t.Errorf("slim pod %+v", s)
	}
	if lim := s.Spec.Containers[0].Resources.Limits; len(lim) != 1 || lim.Name("loom.dev/sriov_a", resource.DecimalSI).Value() != 2 {
		t.Errorf("slim pod limits %v, want loom.dev/sriov_a only", lim)
	}
	if got := podAddresses(s); len(got) != 2 {
		t.Errorf("slim pod holds addresses %v, want the primary and the attachment's", got)
	}
}
