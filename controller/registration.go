package controller

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	admregv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	admregclient "k8s.io/client-go/kubernetes/typed/admissionregistration/v1"
	"k8s.io/client-go/util/retry"

	"github.com/loom-cni/loom/delegate/npwg"
)

// The webhook's paths, one per kind it validates.
const (
	pathPods     = "/validate/pods"
	pathNADs     = "/validate/networkattachmentdefinitions"
	pathTenants  = "/validate/tenants"
	servicePort  = 443
	timeoutLimit = 5
)

// webhookEndpoint is where the API server reaches the webhook: a URL, or a Service.
type webhookEndpoint struct {
	url     *url.URL // without a path; nil means the Service
	service webhookService
}

type webhookService struct{ namespace, name string }

// parseEndpoint reads --webhook-url and --webhook-service: the URL wins when set.
func parseEndpoint(rawURL, service string) (webhookEndpoint, error) {
	if rawURL != "" {
		u, err := url.Parse(rawURL)
		if err != nil {
			return webhookEndpoint{}, fmt.Errorf("parse --webhook-url %q: %w", rawURL, err)
		}
		if u.Scheme != "https" || u.Hostname() == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return webhookEndpoint{}, fmt.Errorf("parse --webhook-url %q: want https://host[:port][/path], no user, query or fragment", rawURL)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		return webhookEndpoint{url: u}, nil
	}
	ns, name, ok := strings.Cut(service, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return webhookEndpoint{}, fmt.Errorf("parse --webhook-service %q: want namespace/name", service)
	}
	return webhookEndpoint{service: webhookService{namespace: ns, name: name}}, nil
}

// hosts are the names the serving certificate must carry for the API server to accept it.
func (e webhookEndpoint) hosts() []string {
	if e.url != nil {
		return []string{e.url.Hostname()}
	}
	s := e.service
	base := s.name + "." + s.namespace
	return []string{base + ".svc", base + ".svc.cluster.local", base, s.name}
}

func (e webhookEndpoint) clientConfig(path string, caBundle []byte) admregv1.WebhookClientConfig {
	cc := admregv1.WebhookClientConfig{CABundle: caBundle}
	if e.url != nil {
		u := *e.url
		u.Path += path
		s := u.String()
		cc.URL = &s
		return cc
	}
	port := int32(servicePort)
	cc.Service = &admregv1.ServiceReference{Namespace: e.service.namespace, Name: e.service.name, Path: &path, Port: &port}
	return cc
}

// String is the endpoint as logs show it.
func (e webhookEndpoint) String() string {
	if e.url != nil {
		return e.url.String()
	}
	return "service " + e.service.namespace + "/" + e.service.name + ":" + fmt.Sprint(servicePort)
}

// podMatchConditions keep the API server from calling the webhook for pod updates that
// change neither the networks annotations nor the ephemeral containers: every label, owner
// or finalizer change of every pod outside kube-system would otherwise wait on the webhook,
// and fail while it is down. The webhook itself checks the same, so the conditions only
// save calls.
var podMatchConditions = []admregv1.MatchCondition{{
	Name: "creation-ephemeral-containers-or-networks-change",
	// request.subResource is absent, not empty, on the pod itself: has() first, or the
	// condition fails, and with it (failure policy Fail) every pod update.
	Expression: "request.operation == 'CREATE' || (has(request.subResource) && request.subResource == '" + subresourceEphemeral + "') || " +
		annotationChanged(nadv1.NetworkAttachmentAnnot) + " || " + annotationChanged(npwg.DefaultNetworkAnnot),
}}

// annotationChanged is a CEL expression that holds when an update changes annotation key.
func annotationChanged(key string) string {
	get := func(obj string) string {
		return fmt.Sprintf("(has(%[1]s.metadata.annotations) && '%[2]s' in %[1]s.metadata.annotations ? %[1]s.metadata.annotations['%[2]s'] : '')", obj, key)
	}
	return get("object") + " != " + get("oldObject")
}

// webhookConfiguration is the ValidatingWebhookConfiguration name must hold. Every field
// the API server would default is set, so that an unchanged configuration compares equal to
// what the server stored and is left alone.
func webhookConfiguration(name string, e webhookEndpoint, caBundle []byte) *admregv1.ValidatingWebhookConfiguration {
	fail := admregv1.Fail
	none := admregv1.SideEffectClassNone
	equivalent := admregv1.Equivalent
	timeout := int32(timeoutLimit)
	notKubeSystem := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{metav1.NamespaceSystem},
	}}}
	hook := func(hookName, path string, nsSel *metav1.LabelSelector, rule admregv1.RuleWithOperations) admregv1.ValidatingWebhook {
		return admregv1.ValidatingWebhook{
			Name:                    hookName,
			ClientConfig:            e.clientConfig(path, caBundle),
			Rules:                   []admregv1.RuleWithOperations{rule},
			FailurePolicy:           &fail,
			MatchPolicy:             &equivalent,
			NamespaceSelector:       nsSel,
			ObjectSelector:          &metav1.LabelSelector{},
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		}
	}
	rule := func(group, version string, resources []string, scope admregv1.ScopeType, ops ...admregv1.OperationType) admregv1.RuleWithOperations {
		return admregv1.RuleWithOperations{
			Operations: ops,
			Rule:       admregv1.Rule{APIGroups: []string{group}, APIVersions: []string{version}, Resources: resources, Scope: &scope},
		}
	}
	pods := hook("pods.admission.loom.dev", pathPods, notKubeSystem,
		rule("", "v1", []string{"pods", "pods/" + subresourceEphemeral}, admregv1.NamespacedScope, admregv1.Create, admregv1.Update))
	pods.MatchConditions = podMatchConditions
	return &admregv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "loom-controller"}},
		Webhooks: []admregv1.ValidatingWebhook{
			pods,
			hook("networkattachmentdefinitions.admission.loom.dev", pathNADs, notKubeSystem,
				rule("k8s.cni.cncf.io", "v1", []string{"network-attachment-definitions"}, admregv1.NamespacedScope, admregv1.Create, admregv1.Update)),
			hook("tenants.admission.loom.dev", pathTenants, &metav1.LabelSelector{},
				rule("loom.dev", "v1alpha1", []string{"tenants"}, admregv1.ClusterScope, admregv1.Create, admregv1.Update)),
		},
	}
}

// registerWebhook creates or updates the ValidatingWebhookConfiguration so that it matches
// want; it writes nothing when it already does. Every replica calls it, so losing a create
// or update race to another one is retried against what that one wrote.
func registerWebhook(ctx context.Context, api admregclient.ValidatingWebhookConfigurationInterface, want *admregv1.ValidatingWebhookConfiguration) (changed bool, err error) {
	for _, h := range want.Webhooks {
		if len(bytes.TrimSpace(h.ClientConfig.CABundle)) == 0 {
			return false, fmt.Errorf("register webhook %s: no CA bundle", want.Name)
		}
	}
	err = retry.OnError(retry.DefaultRetry, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error {
		cur, getErr := api.Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(getErr) {
			_, createErr := api.Create(ctx, want, metav1.CreateOptions{})
			changed = createErr == nil
			return createErr
		}
		if getErr != nil {
			return getErr
		}
		if equality.Semantic.DeepEqual(cur.Webhooks, want.Webhooks) && labelsCover(cur.Labels, want.Labels) {
			return nil
		}
		next := cur.DeepCopy()
		next.Webhooks = want.Webhooks
		if next.Labels == nil {
			next.Labels = map[string]string{}
		}
		for k, v := range want.Labels {
			next.Labels[k] = v
		}
		_, updateErr := api.Update(ctx, next, metav1.UpdateOptions{})
		changed = updateErr == nil
		return updateErr
	})
	if err != nil {
		return false, fmt.Errorf("register webhook %s: %w", want.Name, err)
	}
	return changed, nil
}

func labelsCover(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// checkListenAddress checks that the webhook address is host:port.
func checkListenAddress(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("parse --webhook-address %q: %w", addr, err)
	}
	return nil
}
