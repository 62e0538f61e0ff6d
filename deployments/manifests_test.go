// The tests of package deployments live in package deployments_test: the API server test
// starts a simulated cluster (e2e/sim), and the simulated cluster may come to import package
// deployments for LoomdConfig, which an in-package test could then not import back.
package deployments_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/daemon"
	"github.com/loom-cni/loom/deployments"
	"github.com/loom-cni/loom/deployments/crds"
)

// kubectlPath returns $LOOM_KUBECTL or skips the test.
func kubectlPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("LOOM_KUBECTL")
	if p == "" {
		t.Skip("LOOM_KUBECTL must name kubectl v1.34 (kustomize is built in): run make tools and test through make, or export it")
	}
	return p
}

// rendered is what `kubectl kustomize overlays/<mode>` printed, and its objects.
type rendered struct {
	mode string
	yaml []byte
	objs []*unstructured.Unstructured
}

// render renders the overlay of mode with kubectl, as a user would.
func render(t *testing.T, mode string) rendered {
	t.Helper()
	cmd := exec.Command(kubectlPath(t), "kustomize", filepath.Join("overlays", mode))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize overlays/%s: %v\n%s", mode, err, stderr.Bytes())
	}
	r := rendered{mode: mode, yaml: out}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var u unstructured.Unstructured
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode the objects of overlays/%s: %v", mode, err)
		}
		if u.Object != nil {
			r.objs = append(r.objs, &u)
		}
	}
	return r
}

// find returns the one object of kind, namespace and name, or fails the test.
func (r rendered) find(t *testing.T, kind, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range r.objs {
		if o.GetKind() == kind && o.GetNamespace() == namespace && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("overlays/%s renders no %s %s/%s", r.mode, kind, namespace, name)
	return nil
}

// typed converts the object of kind, namespace and name into out.
func (r rendered) typed(t *testing.T, kind, namespace, name string, out any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(r.find(t, kind, namespace, name).Object, out); err != nil {
		t.Fatalf("%s %s/%s: %v", kind, namespace, name, err)
	}
}

// ofKind returns the objects of the given kinds.
func (r rendered) ofKind(kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objs {
		if slices.Contains(kinds, o.GetKind()) {
			out = append(out, o)
		}
	}
	return out
}

// loomdConfig returns the rendered loomd.yaml and the configuration loomd makes of it on a
// node named node1.
func (r rendered) loomdConfig(t *testing.T) ([]byte, daemon.Config) {
	t.Helper()
	var cm corev1.ConfigMap
	r.typed(t, "ConfigMap", "kube-system", "loomd-config", &cm)
	content, ok := cm.Data["loomd.yaml"]
	if !ok {
		t.Fatalf("ConfigMap loomd-config has no key loomd.yaml: %v", slices.Collect(mapKeys(cm.Data)))
	}
	t.Setenv("NODE_NAME", "node1") // as the DaemonSet sets it
	cfg, err := daemon.ParseConfig([]byte(content))
	if err != nil {
		t.Fatalf("loomd rejects the configuration of overlays/%s: %v", r.mode, err)
	}
	return []byte(content), cfg
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestOverlays renders every overlay and checks what it deploys against what the code
// needs: loomd's configuration, the DaemonSet's mounts and probes, loom-controller's flags,
// and the RBAC.
func TestOverlays(t *testing.T) {
	modes := deployments.Modes()
	if want := []string{"bgp", "vxlan", "vxlan-crosssubnet"}; !slices.Equal(modes, want) {
		t.Errorf("overlays %v, want %v", modes, want)
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			r := render(t, mode)
			t.Run("CRDs", func(t *testing.T) { checkCRDs(t, r) })
			t.Run("LoomdConfig", func(t *testing.T) { checkLoomdConfig(t, r) })
			t.Run("DaemonSet", func(t *testing.T) { checkDaemonSet(t, r) })
			t.Run("Controller", func(t *testing.T) { checkController(t, r) })
			t.Run("RBAC", func(t *testing.T) { checkRBAC(t, r) })
		})
	}
}

// checkCRDs: the overlay installs exactly the CRDs of deployments/crds, which the simulated
// cluster installs too, and deployments/crds/Kustomization lists every one of them.
func checkCRDs(t *testing.T, r rendered) {
	files, err := fs.Glob(crds.Manifests, "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		b, readErr := fs.ReadFile(crds.Manifests, f)
		if readErr != nil {
			t.Fatal(readErr)
		}
		var crd struct {
			Metadata struct{ Name string } `json:"metadata"`
		}
		if err = yaml.Unmarshal(b, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want = append(want, crd.Metadata.Name)
	}
	var got []string
	for _, o := range r.ofKind("CustomResourceDefinition") {
		got = append(got, o.GetName())
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("CRDs %v, want those of deployments/crds: %v", got, want)
	}

	b, err := os.ReadFile("crds/Kustomization")
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ Resources []string }
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	slices.Sort(k.Resources)
	if !slices.Equal(k.Resources, files) {
		t.Errorf("deployments/crds/Kustomization lists %v, the directory holds %v", k.Resources, files)
	}
}

// checkLoomdConfig: the ConfigMap holds what LoomdConfig returns, loomd accepts it, in the
// overlay's mode, and it differs from the base's only in primaryNetwork's mode-specific
// parts.
func checkLoomdConfig(t *testing.T, r rendered) {
	content, cfg := r.loomdConfig(t)
	embedded, err := deployments.LoomdConfig(r.mode)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(content, embedded) {
		t.Errorf("deployments.LoomdConfig(%q) differs from the rendered ConfigMap's loomd.yaml:\n%s\nvs\n%s", r.mode, embedded, content)
	}
	if cfg.PrimaryNetwork == nil || cfg.PrimaryNetwork.Mode != r.mode {
		t.Errorf("primaryNetwork %+v, want mode %s", cfg.PrimaryNetwork, r.mode)
	}
	// What LoomdConfig's callers add must not be there already.
	var top map[string]any
	if err = yaml.Unmarshal(content, &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"nodeName", "kubeconfig"} {
		if _, ok := top[k]; ok {
			t.Errorf("loomd.yaml sets %s: in a pod it comes from $NODE_NAME and the ServiceAccount", k)
		}
	}

	base, err := os.ReadFile("base/config/loomd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b map[string]any
	if err := yaml.Unmarshal(base, &b); err != nil {
		t.Fatal(err)
	}
	for _, m := range []map[string]any{top, b} {
		pn, _ := m["primaryNetwork"].(map[string]any)
		for _, k := range []string{"mode", "vxlan", "bgp", "mtu"} {
			delete(pn, k)
		}
	}
	if !reflect.DeepEqual(top, b) {
		t.Errorf("overlays/%s's loomd.yaml differs from the base's in more than primaryNetwork's mode, mtu, vxlan and bgp:\n%v\nvs base\n%v", r.mode, top, b)
	}
}

// checkDaemonSet: every node path loomd's configuration names is mounted from the same path
// on the host, the probes reach loomd's health address, the init container installs the CNI
// binaries and cannot write the CNI configuration.
func checkDaemonSet(t *testing.T, r rendered) {
	_, cfg := r.loomdConfig(t)
	var ds appsv1.DaemonSet
	r.typed(t, "DaemonSet", "kube-system", "loomd", &ds)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.HostPID {
		t.Errorf("hostNetwork %v, hostPID %v: want the node's network namespace and not its PID namespace", spec.HostNetwork, spec.HostPID)
	}
	if spec.ServiceAccountName != "loomd" {
		t.Errorf("serviceAccountName %q, want loomd", spec.ServiceAccountName)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Key == "" && tol.Operator == corev1.TolerationOpExists && tol.Effect == ""
	}) {
		t.Errorf("tolerations %+v: loomd must tolerate every taint", spec.Tolerations)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 1 {
		t.Fatalf("%d containers and %d init containers, want loomd and install-cni", len(spec.Containers), len(spec.InitContainers))
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	loomd := spec.Containers[0]

	// The configuration file is the ConfigMap's key.
	i := slices.Index(loomd.Command, "--config")
	if i < 0 || i+1 >= len(loomd.Command) {
		t.Fatalf("loomd's command %v has no --config", loomd.Command)
	}
	cfgPath := loomd.Command[i+1]
	m, ok := mountOf(loomd, cfgPath)
	if v := volumes[m.Name]; !ok || v.ConfigMap == nil || v.ConfigMap.Name != "loomd-config" || path.Join(m.MountPath, "loomd.yaml") != cfgPath {
		t.Errorf("--config %s is not the key loomd.yaml of ConfigMap loomd-config (mount %+v)", cfgPath, m)
	}

	// Every path on the node is the host's, at the same place.
	hostPaths := map[string]string{
		"socket's directory":         path.Dir(cfg.Socket),
		"cniConfDir":                 cfg.CNIConfDir,
		"cniBinDir":                  cfg.CNIBinDir,
		"cniCacheDir":                cfg.CNICacheDir,
		"ledgerDir":                  cfg.LedgerDir,
		"sriov.devicePluginDir":      cfg.SRIOV.DevicePluginDir,
		"sriov.podResourcesSocket's": path.Dir(cfg.SRIOV.PodResourcesSocket),
		"sriov.devInfoDir":           cfg.SRIOV.DevInfoDir,
		"sriov.stateDir":             cfg.SRIOV.StateDir,
		"the delegates' state":       "/var/lib/cni",
		"pods' network namespaces":   "/run/netns",
		"the xtables lock":           "/run/xtables.lock",
	}
	for what, p := range hostPaths {
		m, ok := mountOf(loomd, p)
		if !ok {
			t.Errorf("%s %s: not mounted", what, p)
			continue
		}
		v := volumes[m.Name]
		if v.HostPath == nil || v.HostPath.Path != m.MountPath || m.ReadOnly && p != cfg.CNIBinDir {
			t.Errorf("%s %s: mount %+v of volume %+v, want the host's %s, writable", what, p, m, v.VolumeSource, m.MountPath)
		}
	}
	if m, _ := mountOf(loomd, "/run/netns"); m.MountPropagation == nil || *m.MountPropagation == corev1.MountPropagationNone {
		t.Errorf("/run/netns without mount propagation: loomd would not see the namespaces of pods started after it")
	}
	sys := path.Join(cfg.SRIOV.SysfsRoot, "sys")
	if m, ok := mountOf(loomd, sys); !ok || volumes[m.Name].HostPath == nil || volumes[m.Name].HostPath.Path != "/sys" || !m.ReadOnly || m.MountPath != sys {
		t.Errorf("sriov.sysfsRoot %s: %s is not the host's /sys, read-only (mount %+v)", cfg.SRIOV.SysfsRoot, sys, m)
	}

	// NODE_NAME, which loomd takes its node name from.
	if !slices.ContainsFunc(loomd.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Errorf("env %+v: NODE_NAME must come from spec.nodeName", loomd.Env)
	}

	// The probes reach healthAddress: with hostNetwork the kubelet dials host:port in the
	// node's network namespace.
	host, port, _ := net.SplitHostPort(cfg.HealthAddress)
	for name, p := range map[string]*corev1.Probe{"/healthz": loomd.LivenessProbe, "/readyz": loomd.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no HTTP probe of %s", name)
			continue
		}
		g := p.HTTPGet
		if g.Path != name || g.Port.String() != port || g.Host != host {
			t.Errorf("probe of %s: host %q port %s path %s, want %s on healthAddress %s", name, g.Host, g.Port.String(), g.Path, name, cfg.HealthAddress)
		}
	}
	if loomd.Resources.Requests.Cpu().IsZero() || loomd.Resources.Requests.Memory().IsZero() || loomd.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want CPU and memory requests and a memory limit", loomd.Resources)
	}

	// install-cni: installs into the host's cniBinDir and has no way to the CNI configuration.
	install := spec.InitContainers[0]
	if len(install.Command) != 3 {
		t.Fatalf("install-cni's command %v: want install-cni SRC DST", install.Command)
	}
	dst := install.Command[2]
	if m, ok := mountOf(install, dst); !ok || m.MountPath != dst || volumes[m.Name].HostPath == nil || volumes[m.Name].HostPath.Path != cfg.CNIBinDir {
		t.Errorf("install-cni installs into %s, which is not the host's %s (mount %+v)", dst, cfg.CNIBinDir, m)
	}
	for _, m := range install.VolumeMounts {
		if hp := volumes[m.Name].HostPath; hp != nil && hp.Path != cfg.CNIBinDir {
			t.Errorf("install-cni mounts the host's %s: it needs %s only, and must not write the CNI configuration", hp.Path, cfg.CNIBinDir)
		}
	}
}

// mountOf returns the mount of c that holds p (the longest mount path that is p or above it).
func mountOf(c corev1.Container, p string) (corev1.VolumeMount, bool) {
	var best corev1.VolumeMount
	found := false
	for _, m := range c.VolumeMounts {
		if (p == m.MountPath || strings.HasPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")) && len(m.MountPath) > len(best.MountPath) {
			best, found = m, true
		}
	}
	return best, found
}

// controllerFlags are the flags loom-controller defines, read from its source.
func controllerFlags(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../cmd/loom-controller/main.go")
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`flag\.\w+Var\(&[\w.]+, "([a-z-]+)"`).FindAllStringSubmatch(string(b), -1) {
		flags[m[1]] = true
	}
	if len(flags) == 0 {
		t.Fatal("found no flag definitions in cmd/loom-controller/main.go")
	}
	return flags
}

// checkController: loom-controller's flags exist, and name the Service, Secret, Lease and
// ValidatingWebhookConfiguration that the manifests create or grant; it runs unprivileged.
func checkController(t *testing.T, r rendered) {
	var d appsv1.Deployment
	r.typed(t, "Deployment", "kube-system", "loom-controller", &d)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", d.Spec.Replicas)
	}
	spec := d.Spec.Template.Spec
	if spec.ServiceAccountName != "loom-controller" {
		t.Errorf("serviceAccountName %q, want loom-controller", spec.ServiceAccountName)
	}
	c := spec.Containers[0]
	defined := controllerFlags(t)
	flags := map[string]string{}
	for _, arg := range c.Command[1:] {
		name, value, ok := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if !ok || !defined[name] {
			t.Errorf("argument %q: loom-controller defines no flag %q (or it is not --name=value)", arg, name)
		}
		flags[name] = value
	}

	// The webhook's Service: port 443 to the container's webhook port.
	ns, name, _ := strings.Cut(flags["webhook-service"], "/")
	var svc corev1.Service
	r.typed(t, "Service", ns, name, &svc)
	_, webhookPort, _ := net.SplitHostPort(flags["webhook-address"])
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || containerPort(c, svc.Spec.Ports[0].TargetPort.String()) != webhookPort {
		t.Errorf("Service %s/%s ports %+v: want 443 to the webhook's port %s", ns, name, svc.Spec.Ports, webhookPort)
	}
	if !reflect.DeepEqual(svc.Spec.Selector, d.Spec.Selector.MatchLabels) {
		t.Errorf("Service selector %v, Deployment's %v", svc.Spec.Selector, d.Spec.Selector.MatchLabels)
	}
	if p := c.ReadinessProbe; p == nil || p.TCPSocket == nil || containerPort(c, p.TCPSocket.Port.String()) != webhookPort {
		t.Errorf("readiness probe %+v: want the webhook's port %s, which listens once the certificate is there", p, webhookPort)
	}
	_, healthPort, _ := net.SplitHostPort(flags["health-address"])
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || containerPort(c, p.HTTPGet.Port.String()) != healthPort {
		t.Errorf("liveness probe %+v: want /healthz on the health port %s", p, healthPort)
	}

	// The names RBAC grants by name.
	secretNS, secret, _ := strings.Cut(flags["webhook-secret"], "/")
	names := map[string][2]string{ // resource → namespace, name
		"secrets":                         {secretNS, secret},
		"leases":                          {flags["lease-namespace"], flags["lease-name"]},
		"validatingwebhookconfigurations": {"", flags["webhook-config-name"]},
	}
	grants := grantsOf(t, r, "kube-system", "loom-controller")
	for res, nn := range names {
		if !slices.ContainsFunc(grants, func(g grant) bool { return g.resource == res && g.namespace == nn[0] && g.name == nn[1] }) {
			t.Errorf("loom-controller's flags name %s %s/%s, which its RBAC grants nothing on", res, nn[0], nn[1])
		}
	}

	sc, psc := c.SecurityContext, spec.SecurityContext
	if sc == nil || psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("security context %+v / pod %+v: want non-root, a read-only root filesystem, no privilege escalation, no capabilities", sc, psc)
	}
}

// containerPort resolves a port given by number or name to the container's port number.
func containerPort(c corev1.Container, p string) string {
	for _, cp := range c.Ports {
		if cp.Name == p {
			return fmt.Sprint(cp.ContainerPort)
		}
	}
	return p
}

// grant is one permission: verb on resource (with subresource, "tenants/status") of group,
// cluster-wide (namespace "") or in a namespace, on every object (name "") or one.
type grant struct {
	group, resource, verb, namespace, name string
}

func (g grant) String() string {
	s := g.verb + " " + g.resource
	if g.group != "" {
		s += "." + g.group
	}
	if g.name != "" {
		s += " " + g.name
	}
	if g.namespace != "" {
		s += " in " + g.namespace
	}
	return s
}

// grants lists verbs on a resource, cluster-wide and on every object.
func grants(group, resource, verbs string) []grant {
	var out []grant
	for _, v := range strings.Split(verbs, ",") {
		out = append(out, grant{group: group, resource: resource, verb: v})
	}
	return out
}

// scoped returns gs restricted to a namespace and an object name.
func scoped(namespace, name string, gs []grant) []grant {
	for i := range gs {
		gs[i].namespace, gs[i].name = namespace, name
	}
	return gs
}

// loomdGrants is everything loomd does in the API (see rbac-loomd.yaml for where).
func loomdGrants() []grant {
	return slices.Concat(
		grants("", "pods", "get,list,watch,patch"),
		grants("", "namespaces", "list,watch"),
		grants("", "nodes", "get,list,watch,patch"),
		grants("networking.k8s.io", "networkpolicies", "list,watch"),
		grants("k8s.cni.cncf.io", "network-attachment-definitions", "list,watch"),
		grants("k8s.cni.cncf.io", "multi-networkpolicies", "list,watch"),
		grants("loom.dev", "tenants", "list,watch"),
		grants("loom.dev", "ipblocks", "get,list,watch,create,update,delete"),
	)
}

// controllerGrants is everything loom-controller does in the API (see
// rbac-loom-controller.yaml for where).
func controllerGrants() []grant {
	return slices.Concat(
		grants("", "nodes", "list,watch"),
		grants("", "pods", "list,watch"),
		grants("", "namespaces", "list,watch"),
		grants("", "events", "create,patch"),
		grants("networking.k8s.io", "networkpolicies", "list,watch"),
		grants("k8s.cni.cncf.io", "network-attachment-definitions", "list,watch"),
		grants("k8s.cni.cncf.io", "multi-networkpolicies", "list,watch"),
		grants("loom.dev", "tenants", "list,watch"),
		grants("loom.dev", "tenants/status", "update"),
		grants("loom.dev", "ipblocks", "get,list,watch,update,delete"),
		grants("admissionregistration.k8s.io", "validatingwebhookconfigurations", "create"),
		scoped("", "loom", grants("admissionregistration.k8s.io", "validatingwebhookconfigurations", "get,update")),
		scoped("kube-system", "", grants("coordination.k8s.io", "leases", "create")),
		scoped("kube-system", "loom-controller", grants("coordination.k8s.io", "leases", "get,update")),
		scoped("kube-system", "", grants("", "secrets", "create")),
		scoped("kube-system", "loom-webhook-tls", grants("", "secrets", "get,list,watch,update")),
	)
}

// grantsOf expands the rules bound to a ServiceAccount into grants: ClusterRoles through
// ClusterRoleBindings cluster-wide, Roles and ClusterRoles through RoleBindings in their
// namespace.
func grantsOf(t *testing.T, r rendered, namespace, sa string) []grant {
	t.Helper()
	bound := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == namespace
		})
	}
	rules := func(kind, ns, name string) []rbacv1.PolicyRule {
		if kind == "ClusterRole" {
			var cr rbacv1.ClusterRole
			r.typed(t, kind, "", name, &cr)
			return cr.Rules
		}
		var role rbacv1.Role
		r.typed(t, kind, ns, name, &role)
		return role.Rules
	}
	var out []grant
	expand := func(ns string, rs []rbacv1.PolicyRule) {
		for _, rule := range rs {
			names := rule.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, v := range rule.Verbs {
						for _, n := range names {
							out = append(out, grant{group: g, resource: res, verb: v, namespace: ns, name: n})
						}
					}
				}
			}
		}
	}
	for _, o := range r.ofKind("ClusterRoleBinding", "RoleBinding") {
		var b rbacv1.RoleBinding // a ClusterRoleBinding has the same fields
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &b); err != nil {
			t.Fatal(err)
		}
		if bound(b.Subjects) {
			expand(o.GetNamespace(), rules(b.RoleRef.Kind, o.GetNamespace(), b.RoleRef.Name))
		}
	}
	return out
}

// checkRBAC: each ServiceAccount is granted exactly what its program does, and no role has
// a wildcard.
func checkRBAC(t *testing.T, r rendered) {
	for _, o := range r.ofKind("ClusterRole", "Role") {
		var cr rbacv1.ClusterRole
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &cr); err != nil {
			t.Fatal(err)
		}
		for _, rule := range cr.Rules {
			for _, s := range slices.Concat(rule.APIGroups, rule.Resources, rule.Verbs, rule.NonResourceURLs) {
				if strings.Contains(s, "*") {
					t.Errorf("%s %s has a wildcard: %+v", o.GetKind(), o.GetName(), rule)
				}
			}
		}
		if cr.AggregationRule != nil {
			t.Errorf("%s %s aggregates other roles", o.GetKind(), o.GetName())
		}
	}
	for sa, want := range map[string][]grant{"loomd": loomdGrants(), "loom-controller": controllerGrants()} {
		got := grantsOf(t, r, "kube-system", sa)
		for _, g := range want {
			if !slices.Contains(got, g) {
				t.Errorf("%s may not %s, which its code does", sa, g)
			}
		}
		for _, g := range got {
			if !slices.Contains(want, g) {
				t.Errorf("%s may %s, which its code never does", sa, g)
			}
		}
	}
}
