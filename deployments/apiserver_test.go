package deployments_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/deployments"
	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/tenants"
)

// TestMain lets the test binary serve as the simulated cluster's node supervisor.
func TestMain(m *testing.M) { os.Exit(simtest.Main(m)) }

// TestOnAPIServer puts the manifests before a real API server, a one-node simulated cluster:
// every overlay passes a server-side dry run; then the RBAC is installed for real, the
// authorizer grants each ServiceAccount what the code needs and refuses what it does not,
// and loomd (from the ConfigMap's configuration) and loom-controller run with nothing but
// their ServiceAccounts' tokens through everything they do in the API — informers, the node's
// VTEP annotations, IPBlocks claimed and written, network-status, the Lease, the webhook's
// Secret and registration, Tenant status, events, reclaim — without one request refused.
func TestOnAPIServer(t *testing.T) {
	kubectl := kubectlPath(t)
	renders := map[string]rendered{}
	for _, mode := range deployments.Modes() {
		renders[mode] = render(t, mode)
	}
	dir := t.TempDir()
	asDeployed := filepath.Join(dir, "loomd.yaml")
	var controllerBin string
	c := simtest.Start(t, func(o *sim.Options) {
		o.Nodes, o.Mode, o.Kubectl = 1, sim.ModeVXLAN, kubectl
		loomd := filepath.Join(o.BinDir, "loomd")
		controllerBin = filepath.Join(o.BinDir, "loom-controller")
		for _, p := range []string{loomd, controllerBin} {
			if _, err := os.Stat(p); o.BinDir == "" || err != nil {
				t.Skip("no loomd and loom-controller in LOOM_BIN_DIR: run make build and test through make")
			}
		}
		o.Loomd = []string{loomdWrapper(t, dir, loomd, asDeployed)}
	})
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	e := &apiEnv{t: t, c: c, ctx: context.Background(), dyn: dyn, dir: dir}

	t.Run("DryRun", func(t *testing.T) {
		for _, mode := range deployments.Modes() {
			t.Run(mode, func(t *testing.T) { e.dryRun(t, renders[mode].yaml, "") })
		}
		// The dry run does validate: a Deployment with -1 replicas is refused.
		bad := renders["vxlan"].find(t, "Deployment", "kube-system", "loom-controller").DeepCopy()
		if err := unstructured.SetNestedField(bad.Object, int64(-1), "spec", "replicas"); err != nil {
			t.Fatal(err)
		}
		b, err := yaml.Marshal(bad.Object)
		if err != nil {
			t.Fatal(err)
		}
		e.dryRun(t, b, "spec.replicas")
	})

	r := renders["vxlan"]
	steps := []struct {
		name string
		run  func(*testing.T)
	}{
		{"InstallRBAC", func(t *testing.T) { e.installRBAC(t, r) }},
		{"Authorizer", e.checkAuthorizer},
		{"ControllerAsServiceAccount", func(t *testing.T) { e.startController(t, r, controllerBin) }},
		{"LoomdAsServiceAccount", func(t *testing.T) { e.restartLoomd(t, asDeployed) }},
		{"Workload", e.workload},
		{"NothingForbidden", e.nothingForbidden},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return // each step needs the ones before it
		}
	}
}

// loomdWrapper writes the command the simulated cluster runs as loomd: loomd as the cluster
// runs it (its configuration, the admin kubeconfig) until the test writes asDeployed, loomd
// with asDeployed from then on.
func loomdWrapper(t *testing.T, dir, loomd, asDeployed string) string {
	t.Helper()
	p := filepath.Join(dir, "loomd-wrapper")
	script := fmt.Sprintf("#!/bin/sh\nif [ -s %[2]q ]; then exec %[1]q --config %[2]q; fi\nexec %[1]q \"$@\"\n", loomd, asDeployed)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// apiEnv is the cluster and what the steps leave for the next ones.
type apiEnv struct {
	t   *testing.T // the whole test's, for what lives until its end
	c   *sim.Cluster
	ctx context.Context
	dyn dynamic.Interface
	dir string

	controllerLog string
	loomdLog      string
	loomdLogFrom  int64 // where the log of loomd as its ServiceAccount begins
}

const (
	saNamespace = "kube-system"
	testNS      = "deploy-test" // the namespace, and the tenant owning it
	testCIDR    = "10.244.240.0/24"
)

// dryRun applies manifests with a server-side dry run; with refusal set, it expects the API
// server to refuse them with a message containing it.
func (e *apiEnv) dryRun(t *testing.T, manifests []byte, refusal string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "manifests.yaml")
	if err := os.WriteFile(f, manifests, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := e.c.Kubectl(e.ctx, "apply", "--dry-run=server", "-f", f)
	switch {
	case refusal == "" && err != nil:
		t.Errorf("%v\n%s", err, out)
	case refusal != "" && (err == nil || !strings.Contains(string(out), refusal)):
		t.Errorf("kubectl apply --dry-run=server took what it should refuse (%s): %v\n%s", refusal, err, out)
	}
}

// installRBAC applies the ServiceAccounts, roles and bindings for real.
func (e *apiEnv) installRBAC(t *testing.T, r rendered) {
	var docs [][]byte
	for _, o := range r.ofKind("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding") {
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	f := filepath.Join(t.TempDir(), "rbac.yaml")
	if err := os.WriteFile(f, bytes.Join(docs, []byte("---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := e.c.Kubectl(e.ctx, "apply", "-f", f); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// allowed asks the API server's authorizer whether the ServiceAccount may do g.
func (e *apiEnv) allowed(t *testing.T, sa string, g grant) bool {
	t.Helper()
	res, sub, _ := strings.Cut(g.resource, "/")
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:" + saNamespace + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + saNamespace, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: g.namespace, Verb: g.verb, Group: g.group, Resource: res, Subresource: sub, Name: g.name,
		},
	}}
	out, err := e.c.Client().AuthorizationV1().SubjectAccessReviews().Create(e.ctx, sar, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out.Status.Allowed
}

// checkAuthorizer: each ServiceAccount may do what its code does, in every namespace where
// the grant is cluster-wide, and a sample of what it must not.
func (e *apiEnv) checkAuthorizer(t *testing.T) {
	denied := map[string][]grant{
		"loomd": {
			{resource: "nodes", verb: "update"}, {resource: "pods", verb: "update", namespace: "default"},
			{resource: "pods", verb: "delete", namespace: "default"}, {resource: "pods", verb: "create", namespace: "default"},
			{resource: "secrets", verb: "get", namespace: saNamespace}, {resource: "secrets", verb: "list"},
			{resource: "events", verb: "create", namespace: "default"}, {resource: "namespaces", verb: "patch"},
			{group: "loom.dev", resource: "tenants", verb: "update"}, {group: "loom.dev", resource: "tenants/status", verb: "update"},
		},
		"loom-controller": {
			{resource: "secrets", verb: "get", namespace: saNamespace, name: "other"},
			{resource: "secrets", verb: "list", namespace: saNamespace},
			{resource: "secrets", verb: "get", namespace: "default", name: "loom-webhook-tls"},
			{group: "coordination.k8s.io", resource: "leases", verb: "update", namespace: saNamespace, name: "other"},
			{group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations", verb: "delete", name: "loom"},
			{group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations", verb: "update", name: "other"},
			{group: "loom.dev", resource: "ipblocks", verb: "create"}, {group: "loom.dev", resource: "tenants", verb: "update"},
			{resource: "pods", verb: "patch", namespace: "default"}, {resource: "nodes", verb: "patch"},
		},
	}
	for sa, want := range map[string][]grant{"loomd": loomdGrants(), "loom-controller": controllerGrants()} {
		for _, g := range want {
			if !e.allowed(t, sa, g) {
				t.Errorf("the API server does not let %s %s", sa, g)
			}
			if g.namespace == "" && g.resource != "nodes" && g.resource != "namespaces" && !strings.HasPrefix(g.resource, "tenants") &&
				g.resource != "ipblocks" && g.resource != "validatingwebhookconfigurations" {
				g.namespace = testNS // a namespaced resource granted cluster-wide: in any namespace
				if !e.allowed(t, sa, g) {
					t.Errorf("the API server does not let %s %s", sa, g)
				}
			}
		}
		for _, g := range denied[sa] {
			if e.allowed(t, sa, g) {
				t.Errorf("the API server lets %s %s", sa, g)
			}
		}
	}
}

// kubeconfigFor writes a kubeconfig that authenticates with a fresh token of the
// ServiceAccount and nothing else.
func (e *apiEnv) kubeconfigFor(t *testing.T, sa string) string {
	t.Helper()
	tr, err := e.c.Client().CoreV1().ServiceAccounts(saNamespace).CreateToken(e.ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token of ServiceAccount %s: %v", sa, err)
	}
	cfg, err := clientcmd.LoadFromFile(e.c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	for name := range cfg.AuthInfos {
		cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	}
	p := filepath.Join(e.dir, sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// startController replaces the cluster's loom-controller with one running as its
// ServiceAccount, with the Deployment's flags but for its addresses, after removing what it
// must create: its Secret and its ValidatingWebhookConfiguration.
func (e *apiEnv) startController(t *testing.T, r rendered, bin string) {
	var d appsv1.Deployment
	r.typed(t, "Deployment", "kube-system", "loom-controller", &d)
	flags := map[string]string{}
	var args []string
	for _, arg := range d.Spec.Template.Spec.Containers[0].Command[1:] {
		name, value, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		flags[name] = value
		switch name {
		case "health-address", "webhook-address", "webhook-service":
		default:
			args = append(args, arg)
		}
	}
	health, webhook := freeAddr(t), freeAddr(t)
	args = append(args, "--kubeconfig="+e.kubeconfigFor(t, "loom-controller"), "--health-address="+health,
		"--webhook-address="+webhook, "--webhook-url=https://"+webhook, "--interval=2s", "--grace=5s")

	if err := e.c.StopController(); err != nil {
		t.Fatal(err)
	}
	cs := e.c.Client()
	secretNS, secret, _ := strings.Cut(flags["webhook-secret"], "/")
	if err := cs.CoreV1().Secrets(secretNS).Delete(e.ctx, secret, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	hooks := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if err := hooks.Delete(e.ctx, flags["webhook-config-name"], metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}

	e.controllerLog = filepath.Join(e.dir, "loom-controller.log")
	logf, err := os.Create(e.controllerLog)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	e.t.Cleanup(func() {
		if e.t.Failed() {
			logTail(e.t, "loom-controller as its ServiceAccount", e.controllerLog, 0)
		}
	})

	eventually(t, 20*time.Second, "loom-controller serves /healthz", func() (bool, error) {
		resp, err := http.Get("http://" + health + "/healthz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	eventually(t, 20*time.Second, "loom-controller recreates its Secret and registers its webhook", func() (bool, error) {
		if _, err := cs.CoreV1().Secrets(secretNS).Get(e.ctx, secret, metav1.GetOptions{}); err != nil {
			return false, nil
		}
		h, err := hooks.Get(e.ctx, flags["webhook-config-name"], metav1.GetOptions{})
		if err != nil || len(h.Webhooks) == 0 || h.Webhooks[0].ClientConfig.URL == nil {
			return false, nil
		}
		return strings.Contains(*h.Webhooks[0].ClientConfig.URL, webhook), nil
	})
	me := fmt.Sprintf("_%d", cmd.Process.Pid)
	eventually(t, 30*time.Second, "loom-controller leads through its Lease", func() (bool, error) {
		l, err := cs.CoordinationV1().Leases(flags["lease-namespace"]).Get(e.ctx, flags["lease-name"], metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && strings.HasSuffix(*l.Spec.HolderIdentity, me), nil
	})
}

// restartLoomd restarts the node's loomd with the ConfigMap's configuration as its
// ServiceAccount, having removed the node annotations it must publish again.
func (e *apiEnv) restartLoomd(t *testing.T, asDeployed string) {
	n := e.c.Nodes()[0]
	e.loomdLog = filepath.Join(n.Dir, "loomd.log")
	if fi, err := os.Stat(e.loomdLog); err == nil {
		e.loomdLogFrom = fi.Size()
	}
	kubeconfig := e.kubeconfigFor(t, "loomd")
	if err := e.c.StopLoomd(n.Name); err != nil {
		t.Fatal(err)
	}
	published := []string{fabric.AnnotationVTEPMAC, fabric.AnnotationVTEPAddr, fabric.AnnotationUnderlayIP}
	remove := map[string]any{}
	for _, a := range published {
		remove[a] = nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": remove}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = e.c.Client().CoreV1().Nodes().Patch(e.ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	cfg, err := deployments.LoomdConfig("vxlan")
	if err != nil {
		t.Fatal(err)
	}
	cfg = fmt.Appendf(cfg, "nodeName: %s\nkubeconfig: %s\n", n.Name, kubeconfig)
	if err = os.WriteFile(asDeployed, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if e.t.Failed() {
			logTail(e.t, "loomd as its ServiceAccount", e.loomdLog, e.loomdLogFrom)
		}
	})
	if err = e.c.StartLoomd(e.ctx, n.Name); err != nil {
		t.Fatalf("loomd with the ConfigMap's configuration, as its ServiceAccount: %v", err)
	}
	st, err := e.c.NodeStatus(n.Name)
	if err != nil {
		t.Fatal(err)
	}
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.Loomd.PID)); err != nil || !bytes.Contains(cmdline, []byte(asDeployed)) {
		t.Fatalf("loomd (pid %d) does not run with %s: %q, %v", st.Loomd.PID, asDeployed, cmdline, err)
	}
	eventually(t, 10*time.Second, "loomd publishes its VTEP on its Node again", func() (bool, error) {
		node, err := e.c.Client().CoreV1().Nodes().Get(e.ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, a := range published {
			if node.Annotations[a] == "" {
				return false, nil
			}
		}
		return true, nil
	})
}

// workload makes both programs do the rest of what they do in the API: a tenant with its
// own address pool (loomd claims and writes a block of it, patches the pod's network-status;
// the controller writes the tenant's status), an invalid policy (an event), a block of a
// node that does not exist and a leaked address (reclaimed), a pod deleted (its address
// released).
func (e *apiEnv) workload(t *testing.T) {
	cs := e.c.Client()
	tenant := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "loom.dev/v1alpha1", "kind": "Tenant", "metadata": map[string]any{"name": testNS},
		"spec": map[string]any{
			"namespaceSelector": map[string]any{"matchLabels": map[string]any{"tenant": testNS}},
			"addressPools":      []any{map[string]any{"name": "main", "cidr": testCIDR, "blockSize": int64(28)}},
		},
	}}
	if _, err := e.dyn.Resource(tenants.GVR).Create(e.ctx, tenant, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Tenant %s (through the webhook): %v", testNS, err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS, Labels: map[string]string{"tenant": testNS}}}
	if _, err := cs.CoreV1().Namespaces().Create(e.ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "loom-controller writes the Tenant's status", func() (bool, error) {
		u, err := e.dyn.Resource(tenants.GVR).Get(e.ctx, testNS, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		obj, err := tenants.FromUnstructured(u)
		return err == nil && slices.Equal(obj.Status.Namespaces, []string{testNS}), nil
	})

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: testNS},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	if _, err := cs.CoreV1().Pods(testNS).Create(e.ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod (through the webhook): %v", err)
	}
	p, err := e.c.WaitPodRunning(e.ctx, testNS, "p")
	if err != nil {
		t.Fatal(err)
	}
	if ip, parseErr := netip.ParseAddr(p.Status.PodIP); parseErr != nil || !netip.MustParsePrefix(testCIDR).Contains(ip) {
		t.Errorf("pod address %s, want one of the tenant's pool %s", p.Status.PodIP, testCIDR)
	}
	eventually(t, 10*time.Second, "loomd patches the pod's network-status", func() (bool, error) {
		cur, getErr := cs.CoreV1().Pods(testNS).Get(e.ctx, "p", metav1.GetOptions{})
		return getErr == nil && cur.Annotations[nadv1.NetworkStatusAnnot] != "", nil
	})

	mnp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
		"metadata": map[string]any{"name": "bad-cidr", "annotations": map[string]any{"k8s.v1.cni.cncf.io/policy-for": testNS + "/none"}},
		"spec": map[string]any{
			"podSelector": map[string]any{},
			"ingress":     []any{map[string]any{"from": []any{map[string]any{"ipBlock": map[string]any{"cidr": "192.168.70.0/33"}}}}},
		},
	}}
	if _, err = e.dyn.Resource(policy.MultiNetworkPolicyGVR).Namespace(testNS).Create(e.ctx, mnp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "loom-controller records a Warning event on the invalid policy", func() (bool, error) {
		evs, listErr := cs.CoreV1().Events(testNS).List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=bad-cidr"})
		return listErr == nil && len(evs.Items) > 0 && evs.Items[0].Type == corev1.EventTypeWarning, nil
	})

	blocks := e.dyn.Resource(ipam.GVR)
	ghost := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "loom.dev/v1alpha1", "kind": "IPBlock",
		"metadata": map[string]any{"name": "deploy-test.10-244-250-0-26", "labels": map[string]any{ipam.LabelPool: "deploy-test", ipam.LabelNode: "ghost"}},
		"spec":     map[string]any{"pool": "deploy-test", "cidr": "10.244.250.0/26", "node": "ghost"},
	}}
	if _, err = blocks.Create(e.ctx, ghost, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "loom-controller deletes the block of a node that does not exist", func() (bool, error) {
		_, getErr := blocks.Get(e.ctx, ghost.GetName(), metav1.GetOptions{})
		return apierrors.IsNotFound(getErr), nil
	})

	// A leaked address in the tenant's block, which loomd created for this node.
	block, leaked, err := plantLeakedAddress(e.ctx, blocks)
	if err != nil {
		t.Fatalf("plant a leaked address: %v", err)
	}
	holds := func(ip string) (bool, error) {
		u, err := blocks.Get(e.ctx, block, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		b, err := ipam.FromUnstructured(u)
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(b.Spec.Allocations, func(a ipam.Allocation) bool { return a.IP == ip }), nil
	}
	eventually(t, 30*time.Second, "loom-controller releases the leaked address", func() (bool, error) {
		held, holdsErr := holds(leaked)
		return holdsErr == nil && !held, nil
	})

	if err := cs.CoreV1().Pods(testNS).Delete(e.ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.WaitPodGone(e.ctx, testNS, "p"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "loomd releases the deleted pod's address", func() (bool, error) {
		held, holdsErr := holds(p.Status.PodIP)
		return apierrors.IsNotFound(holdsErr) || holdsErr == nil && !held, nil
	})
}

// plantLeakedAddress adds to the tenant's block an allocation whose pod never existed, held
// for an hour, and returns the block's name and the address.
func plantLeakedAddress(ctx context.Context, blocks dynamic.NamespaceableResourceInterface) (block, ip string, err error) {
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		list, listErr := blocks.List(ctx, metav1.ListOptions{LabelSelector: ipam.LabelTenant + "=" + testNS})
		if listErr != nil || len(list.Items) == 0 {
			return fmt.Errorf("loomd claimed no block of the tenant's pool: %v", listErr)
		}
		b, convErr := ipam.FromUnstructured(&list.Items[0])
		if convErr != nil {
			return convErr
		}
		cidr := netip.MustParsePrefix(b.Spec.CIDR)
		last := cidr.Addr()
		for a := cidr.Addr(); cidr.Contains(a); a = a.Next() {
			last = a
		}
		block, ip = b.Name, last.String() // the highest address keeps the allocations in ascending order
		b.Spec.Allocations = append(b.Spec.Allocations, ipam.Allocation{
			IP: ip,
			Owner: ipam.Owner{Kind: ipam.OwnerPod, Namespace: testNS, Name: "gone", UID: "00000000-0000-4000-8000-00000000dead",
				ContainerID: "gone", Ifname: "eth0"},
			Since: metav1.NewTime(time.Now().Add(-time.Hour)),
		})
		u, convErr := b.ToUnstructured()
		if convErr != nil {
			return convErr
		}
		_, updErr := blocks.Update(ctx, u, metav1.UpdateOptions{})
		return updErr
	})
	return block, ip, err
}

// nothingForbidden: neither program was refused a request while it ran as its
// ServiceAccount. client-go's reflectors log a refused list or watch and retry it, so a
// missing grant shows in the logs even where nothing else fails.
func (e *apiEnv) nothingForbidden(t *testing.T) {
	for what, log := range map[string]struct {
		path string
		from int64
	}{"loomd": {e.loomdLog, e.loomdLogFrom}, "loom-controller": {e.controllerLog, 0}} {
		b, err := os.ReadFile(log.path)
		if err != nil {
			t.Fatal(err)
		}
		b = b[min(log.from, int64(len(b))):]
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(strings.ToLower(line), "forbidden") {
				t.Errorf("%s was refused: %s", what, line)
			}
		}
		if len(b) == 0 {
			t.Errorf("%s logged nothing at %s", what, log.path)
		}
	}
}

// eventually polls check every 100 ms until it is true, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, check func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := check()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freeAddr returns 127.0.0.1 with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// logTail puts the end of a log, from offset on, into the test log.
func logTail(t *testing.T, what, path string, offset int64) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	b = b[min(offset, int64(len(b))):]
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	lines = lines[max(0, len(lines)-40):]
	t.Logf("--- %s (last %d lines)\n%s", what, len(lines), strings.Join(lines, "\n"))
}

func ptr[T any](v T) *T { return &v }
