package controller

import (
	"context"
	"slices"
	"strings"
	"testing"

	admregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		url, service string
		hosts        []string
		clientURL    string // of the pods webhook; "" for a Service reference
		err          string
	}{
		{url: "https://198.18.1.1:9443", hosts: []string{"198.18.1.1"}, clientURL: "https://198.18.1.1:9443/validate/pods"},
		{url: "https://webhook.example/loom/", hosts: []string{"webhook.example"}, clientURL: "https://webhook.example/loom/validate/pods"},
		{url: "https://[fd00::1]:9443", hosts: []string{"fd00::1"}, clientURL: "https://[fd00::1]:9443/validate/pods"},
		{url: "http://198.18.1.1:9443", err: "https"},
		{url: "https://198.18.1.1:9443/?a=b", err: "query"},
		{url: "https://user@host", err: "user"},
		{service: "kube-system/loom-controller", hosts: []string{
			"loom-controller.kube-system.svc", "loom-controller.kube-system.svc.cluster.local", "loom-controller.kube-system", "loom-controller"}},
		{service: "loom-controller", err: "namespace/name"},
		{service: "a/b/c", err: "namespace/name"},
	} {
		t.Run(tc.url+tc.service, func(t *testing.T) {
			e, err := parseEndpoint(tc.url, tc.service)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(e.hosts(), tc.hosts) {
				t.Errorf("hosts %v, want %v", e.hosts(), tc.hosts)
			}
			cc := e.clientConfig(pathPods, []byte("ca"))
			switch {
			case tc.clientURL != "" && (cc.URL == nil || *cc.URL != tc.clientURL || cc.Service != nil):
				t.Errorf("client config %+v, want URL %s", cc, tc.clientURL)
			case tc.clientURL == "" && (cc.URL != nil || cc.Service == nil || *cc.Service.Path != pathPods || *cc.Service.Port != 443 ||
				cc.Service.Namespace != "kube-system" || cc.Service.Name != "loom-controller"):
				t.Errorf("client config %+v, want the Service loom-controller in kube-system, port 443, path %s", cc, pathPods)
			}
		})
	}
}

func TestWebhookConfiguration(t *testing.T) {
	e, err := parseEndpoint("https://198.18.1.1:9443", "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := webhookConfiguration("loom", e, []byte("CA"))
	if cfg.Name != "loom" || len(cfg.Webhooks) != 3 {
		t.Fatalf("configuration %s with %d webhooks, want loom with 3", cfg.Name, len(cfg.Webhooks))
	}
	createUpdate := []admregv1.OperationType{admregv1.Create, admregv1.Update}
	want := []struct {
		group, version string
		resources      []string
		path           string
		ops            []admregv1.OperationType
		notKubeSystem  bool
		conditions     int
	}{
		// Pods are created, their networks annotations updated, and ephemeral containers
		// added to them through the ephemeralcontainers subresource (kubectl debug).
		{"", "v1", []string{"pods", "pods/ephemeralcontainers"}, pathPods, createUpdate, true, 1},
		{"k8s.cni.cncf.io", "v1", []string{"network-attachment-definitions"}, pathNADs, createUpdate, true, 0},
		{"loom.dev", "v1alpha1", []string{"tenants"}, pathTenants, createUpdate, false, 0},
	}
	for i, w := range want {
		h := cfg.Webhooks[i]
		t.Run(w.resources[0], func(t *testing.T) {
			r := h.Rules[0]
			if len(h.Rules) != 1 || !slices.Equal(r.APIGroups, []string{w.group}) || !slices.Equal(r.APIVersions, []string{w.version}) ||
				!slices.Equal(r.Resources, w.resources) || !slices.Equal(r.Operations, w.ops) {
				t.Errorf("rules %+v, want %s/%s %s on %v", h.Rules, w.group, w.version, w.resources, w.ops)
			}
			if len(h.MatchConditions) != w.conditions {
				t.Errorf("match conditions %+v, want %d", h.MatchConditions, w.conditions)
			}
			for _, c := range h.MatchConditions {
				for _, s := range []string{"'CREATE'", "'ephemeralcontainers'", "'k8s.v1.cni.cncf.io/networks'", "'v1.multus-cni.io/default-network'", "oldObject"} {
					if !strings.Contains(c.Expression, s) {
						t.Errorf("match condition %s does not consider %s", c.Expression, s)
					}
				}
			}
			if *h.FailurePolicy != admregv1.Fail || *h.SideEffects != admregv1.SideEffectClassNone || *h.TimeoutSeconds != 5 ||
				!slices.Equal(h.AdmissionReviewVersions, []string{"v1"}) {
				t.Errorf("failurePolicy %s, sideEffects %s, timeout %d, versions %v", *h.FailurePolicy, *h.SideEffects, *h.TimeoutSeconds, h.AdmissionReviewVersions)
			}
			if got := *h.ClientConfig.URL; got != "https://198.18.1.1:9443"+w.path || string(h.ClientConfig.CABundle) != "CA" {
				t.Errorf("client config %s %q", got, h.ClientConfig.CABundle)
			}
			excludes := len(h.NamespaceSelector.MatchExpressions) == 1 &&
				h.NamespaceSelector.MatchExpressions[0].Key == "kubernetes.io/metadata.name" &&
				h.NamespaceSelector.MatchExpressions[0].Operator == metav1.LabelSelectorOpNotIn &&
				slices.Equal(h.NamespaceSelector.MatchExpressions[0].Values, []string{"kube-system"})
			if excludes != w.notKubeSystem {
				t.Errorf("namespaceSelector %+v: excludes kube-system %v, want %v", h.NamespaceSelector, excludes, w.notKubeSystem)
			}
		})
	}
}

func TestRegisterWebhook(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	api := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	e, _ := parseEndpoint("https://198.18.1.1:9443", "")
	writes := func() int {
		n := 0
		for _, a := range cs.Actions() {
			if v := a.GetVerb(); v == "create" || v == "update" {
				n++
			}
		}
		return n
	}
	steps := []struct {
		name    string
		before  func()
		ca      string
		changed bool
	}{
		{name: "created", ca: "CA1", changed: true},
		{name: "left alone when it matches", ca: "CA1", changed: false},
		{name: "new CA bundle", ca: "CA2", changed: true},
		{name: "restored after someone edits it", ca: "CA2", changed: true, before: func() {
			cur, _ := api.Get(ctx, "loom", metav1.GetOptions{})
			ignore := admregv1.Ignore
			cur.Webhooks[0].FailurePolicy = &ignore
			cur.Labels = map[string]string{"team": "net"}
			if _, err := api.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "recreated after someone deletes it", ca: "CA2", changed: true, before: func() {
			if err := api.Delete(ctx, "loom", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.before != nil {
				s.before()
			}
			before := writes()
			changed, err := registerWebhook(ctx, api, webhookConfiguration("loom", e, []byte(s.ca)))
			if err != nil {
				t.Fatal(err)
			}
			if changed != s.changed || (writes() > before) != s.changed {
				t.Errorf("changed %v after %d writes, want %v", changed, writes()-before, s.changed)
			}
			cur, err := api.Get(ctx, "loom", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range cur.Webhooks {
				if string(h.ClientConfig.CABundle) != s.ca || *h.FailurePolicy != admregv1.Fail {
					t.Errorf("webhook %s: caBundle %q, failurePolicy %s", h.Name, h.ClientConfig.CABundle, *h.FailurePolicy)
				}
			}
			if cur.Labels["app.kubernetes.io/managed-by"] != "loom-controller" {
				t.Errorf("labels %v", cur.Labels)
			}
		})
	}
	if _, err := registerWebhook(ctx, api, webhookConfiguration("loom", e, nil)); err == nil {
		t.Error("registering without a CA bundle should fail")
	}
}
