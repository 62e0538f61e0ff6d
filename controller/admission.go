package controller

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
	// pods lists the pods of a namespace, as slimPod keeps them: the VFs a tenant's pods hold.
	pods func(namespace string) []*corev1.Pod
	// nadPools lists the SR-IOV pools NADs name in their resourceName annotation.
	nadPools func() []string
	log      *slog.Logger
}

// subresourceEphemeral is the subresource through which containers are added to a running
// pod (kubectl debug).
const subresourceEphemeral = "ephemeralcontainers"

// pod decides what changes a pod's networks or privileges: its creation (the networks it asks
// for, the host ports it maps, the VFs it requests and whether it asks for NET_ADMIN or an
// equivalent), an update of its networks annotations (the networks and host ports it now asks
// for), and ephemeral containers added to it (whether they ask for NET_ADMIN).
func (a *admission) pod(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	create := req.Operation == admissionv1.Create && req.SubResource == ""
	update := req.Operation == admissionv1.Update && (req.SubResource == "" || req.SubResource == subresourceEphemeral)
	if !create && !update {
		return allowed()
	}
	var pod, old corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return denied(http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("decode pod: %v", err))
	}
	if update {
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return denied(http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("decode the pod's old version: %v", err))
		}
		if req.SubResource == "" && !networksChanged(&old, &pod) {
			return allowed()
		}
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
	var r tenants.PodRequest
	switch {
	case req.SubResource == subresourceEphemeral:
		r = tenants.PodRequest{Namespace: ns, Name: name, NetAdmin: tenants.NetAdminReason(&corev1.PodSpec{EphemeralContainers: added(&old, &pod)})}
	default:
		r, err = a.podRequest(dir, &pod, ns, name, create)
	}
	if err != nil {
		if dir.Platform(ns) {
			log.Debug("admitted platform pod whose networks do not parse; CNI ADD reports it", "error", err)
			return allowed()
		}
		log.Info("denied pod", "error", err)
		return denied(http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
	}
	if err := dir.CheckPod(r); err != nil {
		log.Info("denied pod", append(denialAttrs(err, true), "operation", string(req.Operation), "subresource", req.SubResource)...)
		return denied(http.StatusForbidden, metav1.StatusReasonForbidden, err.Error())
	}
	log.Debug("admitted pod", "operation", string(req.Operation), "subresource", req.SubResource, "networks", len(r.Networks), "vfs", r.VFs)
	return allowed()
}

// networksChanged reports whether an update changes the annotations that select a pod's
// networks.
func networksChanged(old, cur *corev1.Pod) bool {
	for _, k := range []string{nadv1.NetworkAttachmentAnnot, npwg.DefaultNetworkAnnot} {
		if old.Annotations[k] != cur.Annotations[k] {
			return true
		}
	}
	return false
}

// added returns the ephemeral containers of cur that old does not have, by name: those an
// update of the ephemeralcontainers subresource adds.
func added(old, cur *corev1.Pod) []corev1.EphemeralContainer {
	var out []corev1.EphemeralContainer
	for _, c := range cur.Spec.EphemeralContainers {
		if !slices.ContainsFunc(old.Spec.EphemeralContainers, func(o corev1.EphemeralContainer) bool { return o.Name == c.Name }) {
			out = append(out, c)
		}
	}
	return out
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

// podRequest gathers what CheckPod needs from a pod and the caches: its networks (the
// default-network override first, then its networks annotation) and the host ports their
// portMappings ask for. For a pod being created also: why it would hold NET_ADMIN, its
// containers' host ports, the VFs it requests and those its tenant's other pods hold. An
// update cannot change those (they are immutable), so it is judged on its networks alone. A
// NAD the cache does not hold (it may not exist yet) is decided by its namespace alone; CNI
// ADD checks it again.
func (a *admission) podRequest(dir *tenants.Directory, pod *corev1.Pod, ns, name string, create bool) (tenants.PodRequest, error) {
	r := tenants.PodRequest{Namespace: ns, Name: name}
	type annotated struct {
		key string
		sel []npwg.Selection
	}
	var sels []annotated
	if v := pod.Annotations[npwg.DefaultNetworkAnnot]; strings.TrimSpace(v) != "" {
		override, err := npwg.ParseNetworks(v, systemNamespace)
		if err != nil {
			return r, fmt.Errorf("pod %s/%s: annotation %s: %w", ns, name, npwg.DefaultNetworkAnnot, err)
		}
		sels = append(sels, annotated{npwg.DefaultNetworkAnnot, override})
	}
	networks, err := npwg.ParseNetworks(pod.Annotations[nadv1.NetworkAttachmentAnnot], ns)
	if err != nil {
		return r, fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	sels = append(sels, annotated{nadv1.NetworkAttachmentAnnot, networks})
	for _, group := range sels {
		for i, s := range group.sel {
			n := tenants.Network{Ref: tenants.NetworkRef{Namespace: s.Namespace, Name: s.Name}}
			if nad, err := a.nads.NetworkAttachmentDefinitions(s.Namespace).Get(s.Name); err == nil {
				if n, err = tenants.NetworkOf(nad); err != nil {
					return r, fmt.Errorf("pod %s/%s: network %s: %w", ns, name, s.Ref(), err)
				}
			}
			r.Networks = append(r.Networks, n)
			for j, pm := range s.PortMappings {
				r.HostPorts = append(r.HostPorts, tenants.HostPort{
					Field: fmt.Sprintf("%s[%d].portMappings[%d].hostPort", group.key, i, j), Port: pm.HostPort, Protocol: cmp.Or(strings.ToLower(pm.Protocol), "tcp")})
			}
		}
	}
	if !create {
		return r, nil
	}
	r.NetAdmin = tenants.NetAdminReason(&pod.Spec)
	r.HostPorts = append(tenants.ContainerHostPorts(&pod.Spec), r.HostPorts...)
	pools := map[string]bool{}
	for _, p := range dir.SRIOVPools() {
		pools[p] = true
	}
	for _, p := range a.nadPools() {
		pools[p] = true
	}
	isVF := func(resource string) bool { return pools[resource] }
	r.VFs = tenants.DeviceRequests(&pod.Spec, isVF)
	if t, ok := dir.TenantOf(ns); ok && len(r.VFs) > 0 && t.VFQuota >= 0 {
		var others []*corev1.Pod
		for _, member := range dir.Members(t.Name) {
			for _, p := range a.pods(member) {
				if member != ns || p.Name != pod.Name || pod.Name == "" {
					others = append(others, p)
				}
			}
		}
		r.HeldVFs = tenants.HeldVFs(others, isVF)
	}
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
