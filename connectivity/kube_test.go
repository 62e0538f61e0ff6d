package connectivity

import (
	"context"
	"slices"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/loom-cni/loom/policy"
)

func TestProbeSpecs(t *testing.T) {
	s := smallCluster()
	got := ProbeSpecs(&s, everyPod)
	want := []ProbeSpec{
		{Namespace: "acme", Networks: []policy.NetworkID{lan}}, // web and client alike; pending runs nowhere
		{Namespace: "globex", Networks: []policy.NetworkID{lan}},
		{Namespace: "infra"},
	}
	if !slices.EqualFunc(got, want, func(a, b ProbeSpec) bool { return a.Namespace == b.Namespace && slices.Equal(a.Networks, b.Networks) }) {
		t.Errorf("ProbeSpecs = %+v, want %+v", got, want)
	}
	if got := ProbeSpecs(&s, func(p policy.Pod) bool { return p.Namespace == "infra" }); len(got) != 1 || got[0].Namespace != "infra" {
		t.Errorf("ProbeSpecs of infra only = %+v", got)
	}
}

// TestProbePodsCreateAndDelete: two unprivileged probe pods per spec, on the spec's networks,
// labelled with the run; Delete removes them by that label in every namespace it used.
func TestProbePodsCreateAndDelete(t *testing.T) {
	kube := fake.NewClientset()
	if _, err := NewProbePods(kube, []string{"kubectl"}, ""); err == nil {
		t.Error("NewProbePods without an image: no error")
	}
	pp, err := NewProbePods(kube, []string{"kubectl"}, "example.com/loomctl:1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	specs := []ProbeSpec{{Namespace: "acme", Networks: []policy.NetworkID{lan, "acme/data"}}, {Namespace: "infra"}}
	if err := pp.Create(ctx, specs); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"acme", "infra"} {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) != probeReplicas {
			t.Errorf("%d probe pods in %s, want %d", len(pods.Items), ns, probeReplicas)
		}
		for _, pod := range pods.Items {
			key := policy.PodKey{Namespace: pod.Namespace, Name: pod.Name}
			if !pp.Include(policy.Pod{PodKey: key}) {
				t.Errorf("probe pod %s not included in the run", key)
			}
			if pod.Labels[RunLabel] != pp.Run() {
				t.Errorf("probe pod %s: labels %v, want %s=%s", key, pod.Labels, RunLabel, pp.Run())
			}
			wantNets := map[string]string{"acme": "infra/lan,acme/data", "infra": ""}[ns]
			if got := pod.Annotations[nadv1.NetworkAttachmentAnnot]; got != wantNets {
				t.Errorf("probe pod %s: networks %q, want %q", key, got, wantNets)
			}
			c := pod.Spec.Containers[0]
			if c.Image != "example.com/loomctl:1" || !slices.Equal(c.Command, []string{ProbeLoomctl, "connectivity", IdleCommand}) {
				t.Errorf("probe pod %s runs %s %v", key, c.Image, c.Command)
			}
			sc := c.SecurityContext
			if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("probe pod %s: security context %+v, want every capability dropped and no escalation", key, sc)
			}
			if psc := pod.Spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
				t.Errorf("probe pod %s may run as root", key)
			}
		}
	}
	if pp.Include(policy.Pod{PodKey: policy.PodKey{Namespace: "acme", Name: "web"}}) {
		t.Error("a pod of the cluster is included in the run")
	}
	if err := pp.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	var deleted []string
	for _, a := range kube.Actions() {
		if dc, ok := a.(k8stesting.DeleteCollectionAction); ok && a.GetVerb() == "delete-collection" && a.GetResource().Resource == "pods" {
			if sel := dc.GetListRestrictions().Labels.String(); sel != RunLabel+"="+pp.Run() {
				t.Errorf("delete pods in %s by %q, want by %s=%s", a.GetNamespace(), sel, RunLabel, pp.Run())
			}
			deleted = append(deleted, a.GetNamespace())
		}
	}
	if slices.Sort(deleted); !slices.Equal(deleted, []string{"acme", "infra"}) {
		t.Errorf("probe pods deleted in %v, want in acme and infra", deleted)
	}
}
