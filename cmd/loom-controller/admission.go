package main

// The webhook's decisions. The rules themselves are tenants' (CheckPod, CheckNetwork,
// Parse); this file only gathers their inputs from the request and the caches and turns
// the answer into an AdmissionResponse whose message kubectl prints as it is.
//
// A pod in no tenant's namespace is the platform's: the webhook checks only that it uses
// no tenant's network. What it cannot read there (a malformed networks annotation, a NAD
// whose configuration does not parse) is left to CNI ADD, which reports it on the pod as it
// always has. A tenant's pod is refused for the same input: an annotation the webhook cannot
// read is one it cannot check.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadlisters "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/listers/k8s.cni.cncf.io/v1"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/tenants"
)

// systemNamespace is where a pod's default-network override is looked up when it names no
// namespace, as loomd does by default.
const systemNamespace = metav1.NamespaceSystem

// directorySource gives the tenants directory a request is decided with.
type directorySource interface {
	// directoryFor returns a directory that knows namespace, or why there is none.
	directoryFor(ctx context.Context, namespace string) (*tenants.Directory, error)
}

// admission decides admission requests for Pods, NetworkAttachmentDefinitions and Tenants.
type admission struct {
	dirs directorySource
	nads nadlisters.NetworkAttachmentDefinitionLister
	log  *slog.Logger
}

// pod decides the creation of a pod: the networks it asks for, the VFs it requests and
// whether it asks for NET_ADMIN or an equivalent.
func (a *admission) pod(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create {
		return allowed()
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return denied(http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("decode pod: %v", err))
	}
	ns := cmp.Or(pod.Namespace, req.Namespace)
	name := podName(&pod, req)
	log := a.log.With("pod", name, "namespace", ns)
	dir, err := a.dirs.directoryFor(ctx, ns)
	if err != nil {
		log.Warn("cannot decide on pod", "error", err)
		return denied(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			fmt.Sprintf("pod %s/%s: %v; try again", ns, name, err))
	}
	r, err := a.podRequest(&pod, ns, name)
	if err != nil {
		if dir.Platform(ns) {
			log.Debug("admitted platform pod whose networks do not parse; CNI ADD reports it", "error", err)
			return allowed()
		}
		log.Info("denied pod", "error", err)
		return denied(http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
	}
	if err := dir.CheckPod(r); err != nil {
		log.Info("denied pod", denialAttrs(err, true)...)
		return denied(http.StatusForbidden, metav1.StatusReasonForbidden, err.Error())
	}
	log.Debug("admitted pod", "networks", len(r.Networks), "vfs", r.VFs)
	return allowed()
}

// podName names a pod in messages: its name, or for one the API server has yet to name,
// its generateName followed by an ellipsis.
func podName(pod *corev1.Pod, req *admissionv1.AdmissionRequest) string {
	switch {
	case pod.Name != "":
		return pod.Name
	case req.Name != "":
		return req.Name
	case pod.GenerateName != "":
		return pod.GenerateName + "…"
	}
	return "(unnamed)"
}

// podRequest gathers what CheckPod needs from a pod and the NAD cache: its networks
// (the default-network override first, then its networks annotation), the VFs it requests
// from their pools and why it would hold NET_ADMIN. A NAD the cache does not hold (it may
// not exist yet) is decided by its namespace alone; CNI ADD checks it again.
func (a *admission) podRequest(pod *corev1.Pod, ns, name string) (tenants.PodRequest, error) {
	r := tenants.PodRequest{Namespace: ns, Name: name, NetAdmin: tenants.NetAdminReason(&pod.Spec)}
	var sels []npwg.Selection
	if v := pod.Annotations[npwg.DefaultNetworkAnnot]; strings.TrimSpace(v) != "" {
		override, err := npwg.ParseNetworks(v, systemNamespace)
		if err != nil {
			return r, fmt.Errorf("pod %s/%s: annotation %s: %w", ns, name, npwg.DefaultNetworkAnnot, err)
		}
		sels = append(sels, override...)
	}
	networks, err := npwg.ParseNetworks(pod.Annotations[nadv1.NetworkAttachmentAnnot], ns)
	if err != nil {
		return r, fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	sels = append(sels, networks...)
	var pools []string
	for _, s := range sels {
		n := tenants.Network{Ref: tenants.NetworkRef{Namespace: s.Namespace, Name: s.Name}}
		if nad, err := a.nads.NetworkAttachmentDefinitions(s.Namespace).Get(s.Name); err == nil {
			if n, err = tenants.NetworkOf(nad); err != nil {
				return r, fmt.Errorf("pod %s/%s: network %s: %w", ns, name, s.Ref(), err)
			}
			if n.ResourceName != "" && !slices.Contains(pools, n.ResourceName) {
				pools = append(pools, n.ResourceName)
			}
		}
		r.Networks = append(r.Networks, n)
	}
	r.VFs = tenants.CountResources(&pod.Spec, pools)
	return r, nil
}

// nad decides the creation or update of a NetworkAttachmentDefinition: its configuration
// must parse, and its VLAN and SR-IOV pool must be its namespace's tenant's.
func (a *admission) nad(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return allowed()
	}
	var nad nadv1.NetworkAttachmentDefinition
	if err := json.Unmarshal(req.Object.Raw, &nad); err != nil {
		return denied(http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("decode NetworkAttachmentDefinition: %v", err))
	}
	nad.Namespace = cmp.Or(nad.Namespace, req.Namespace)
	log := a.log.With("network", nad.Namespace+"/"+nad.Name, "namespace", nad.Namespace)
	n, err := tenants.NetworkOf(&nad)
	if err != nil {
		log.Info("denied network", "error", err)
		return denied(http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
	}
	dir, err := a.dirs.directoryFor(ctx, nad.Namespace)
	if err != nil {
		log.Warn("cannot decide on network", "error", err)
		return denied(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			fmt.Sprintf("network %s/%s: %v; try again", nad.Namespace, nad.Name, err))
	}
	if err := dir.CheckNetwork(n); err != nil {
		log.Info("denied network", denialAttrs(err, false)...)
		return denied(http.StatusForbidden, metav1.StatusReasonForbidden, err.Error())
	}
	log.Debug("admitted network", "vlans", n.VLANs, "resourceName", n.ResourceName)
	return allowed()
}

// tenant decides the creation or update of a Tenant: its spec must parse without problems.
// The API server stores a Tenant that the webhook did not see (it was down, or the Tenant
// came from a backup); its status then reports the problems.
func (a *admission) tenant(_ context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return allowed()
	}
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON(req.Object.Raw); err != nil {
		return denied(http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("decode Tenant: %v", err))
	}
	obj, err := tenants.FromUnstructured(&u)
	if err != nil {
		return denied(http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
	}
	log := a.log.With("tenant", obj.Name)
	if _, problems := tenants.Parse(obj); len(problems) > 0 {
		msgs := make([]string, len(problems))
		for i, p := range problems {
			msgs[i] = p.Error()
		}
		msg := fmt.Sprintf("Tenant %s is invalid: %s", obj.Name, strings.Join(msgs, "; "))
		log.Info("denied tenant", "problems", len(problems), "error", msg)
		return denied(http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, msg)
	}
	log.Debug("admitted tenant")
	return allowed()
}

// denialAttrs are the log attributes of a refusal: the Denial's parts when it is one. The
// network is left out when the logger already carries it or the denial names none.
func denialAttrs(err error, withNetwork bool) []any {
	var d *tenants.Denial
	if !errors.As(err, &d) {
		return []any{"error", err}
	}
	attrs := []any{"tenant", string(d.Tenant), "rule", d.Rule, "error", err}
	if withNetwork && d.Network != "" {
		attrs = append([]any{"network", d.Network}, attrs...)
	}
	return attrs
}
