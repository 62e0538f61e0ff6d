package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/tenants"
)

// platform names the namespaces no tenant owns in loomctl's tables.
const platform = "(platform)"

// tenantRow is one line of `loomctl tenants`: a tenant, or the platform.
type tenantRow struct {
	Tenant     string   `json:"tenant"`
	Problems   []string `json:"problems,omitempty"`
	Namespaces []string `json:"namespaces"`
	Pods       int      `json:"pods"`
	Networks   []string `json:"networks"`
	Addresses  int      `json:"addresses"`
	Pools      []string `json:"sriovPools,omitempty"`
	Peers      []string `json:"peers,omitempty"`
}

func newTenantsCommand(getenv func(string) string) *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "tenants",
		Short: "Show each tenant's namespaces, pods, networks and addresses",
		Long: `tenants reads the cluster's Tenants, namespaces, NetworkAttachmentDefinitions and pods and
prints, per tenant and for the platform (namespaces no tenant owns): its namespaces, its running
pods, the networks its pods may use (the NADs of its namespaces and its shared networks), the
addresses its pods hold on all their networks, its SR-IOV pools and its peers. A Tenant whose
spec has parts Loom cannot use is shown with them. It reads any cluster through --kubeconfig
($KUBECONFIG), or the simulated cluster of --dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rc, err := clusterConfig(f.kubeconfig, f.dir)
			if err != nil {
				return err
			}
			done := progressAfter(cmd.ErrOrStderr(), time.Second, "reading tenants, namespaces, networks and pods…")
			rows, err := readTenants(cmd.Context(), rc)
			done()
			if err != nil {
				return err
			}
			return f.write(cmd.OutOrStdout(), rows, func(w io.Writer) { printTenants(w, rows) })
		},
	}
	f.add(cmd, getenv)
	return cmd
}

// clusterFlags are the flags of a command that reads a cluster: which one, and the output
// format.
type clusterFlags struct{ kubeconfig, dir, output string }

func (f *clusterFlags) add(cmd *cobra.Command, getenv func(string) string) {
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", getenv("KUBECONFIG"), "kubeconfig of the cluster ($KUBECONFIG)")
	cmd.Flags().StringVar(&f.dir, "dir", "", "read the simulated cluster of this directory instead")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "table or json")
}

// write prints v as indented JSON with -o json, else as table prints it.
func (f clusterFlags) write(w io.Writer, v any, table func(io.Writer)) error {
	switch f.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table":
		table(w)
		return nil
	}
	return fmt.Errorf("--output %q: want table or json", f.output)
}

// clients are the API clients loomctl's commands read a cluster with.
type clients struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
	nads nadclient.Interface
}

func newClients(rc *rest.Config) (clients, error) {
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return clients{}, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return clients{}, err
	}
	nads, err := nadclient.NewForConfig(rc)
	if err != nil {
		return clients{}, err
	}
	return clients{kube, dyn, nads}, nil
}

// clusterConfig is the client configuration of the simulated cluster in dir, or of the
// kubeconfig.
func clusterConfig(kubeconfig, dir string) (*rest.Config, error) {
	if dir != "" {
		c, err := sim.Open(dir)
		if err != nil {
			return nil, err
		}
		return c.RESTConfig(), nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return rc, nil
}

// progressAfter prints msg to w if the returned function is not called within d.
func progressAfter(w io.Writer, d time.Duration, msg string) (done func()) {
	t := time.AfterFunc(d, func() { fmt.Fprintln(w, msg) })
	return func() { t.Stop() }
}

// readTenants reads what `loomctl tenants` shows.
func readTenants(ctx context.Context, rc *rest.Config) ([]tenantRow, error) {
	cs, err := newClients(rc)
	if err != nil {
		return nil, err
	}
	kube, dyn, nadc := cs.kube, cs.dyn, cs.nads
	tl, err := dyn.Resource(tenants.GVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	var ts []tenants.Tenant
	problems := map[tenants.Name][]string{}
	for i := range tl.Items {
		obj, cerr := tenants.FromUnstructured(&tl.Items[i])
		if cerr != nil {
			return nil, cerr
		}
		t, ps := tenants.Parse(obj)
		ts = append(ts, t)
		for _, p := range ps {
			problems[t.Name] = append(problems[t.Name], p.Error())
		}
	}
	nsl, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	labels := map[string]map[string]string{}
	for _, ns := range nsl.Items {
		labels[ns.Name] = ns.Labels
	}
	nads, err := nadc.K8sCniCncfIoV1().NetworkAttachmentDefinitions("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list NetworkAttachmentDefinitions: %w", err)
	}
	pods, err := kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	return tenantRows(tenants.NewDirectory(ts, labels), problems, nads.Items, pods.Items), nil
}

// tenantRows sorts namespaces, networks and pods to their tenants: the tenants by name, then
// the platform. A namespace two tenants claim is no one's, and shows under neither.
func tenantRows(dir *tenants.Directory, problems map[tenants.Name][]string, nads []nadv1.NetworkAttachmentDefinition, pods []corev1.Pod) []tenantRow {
	rows := map[string]*tenantRow{}
	owner := func(ns string) (string, bool) {
		if t, ok := dir.TenantOf(ns); ok {
			return string(t.Name), true
		}
		if len(dir.Conflicted(ns)) > 0 {
			return "", false
		}
		return platform, true
	}
	row := func(name string) *tenantRow {
		if rows[name] == nil {
			rows[name] = &tenantRow{Tenant: name, Namespaces: []string{}, Networks: []string{}}
		}
		return rows[name]
	}
	for _, t := range dir.Tenants() {
		r := row(string(t.Name))
		r.Problems = problems[t.Name]
		r.Namespaces = append(r.Namespaces, dir.Members(t.Name)...)
		for _, ref := range t.SharedNetworks {
			r.Networks = append(r.Networks, ref.String())
		}
		r.Pools = t.SRIOVPools
		for _, p := range t.Peers {
			r.Peers = append(r.Peers, string(p))
		}
	}
	// The platform's namespaces are those with networks or running pods: every cluster has
	// a few empty ones.
	platformNamespace := func(r *tenantRow, ns string) {
		if r.Tenant == platform && !slices.Contains(r.Namespaces, ns) {
			r.Namespaces = append(r.Namespaces, ns)
		}
	}
	for _, nad := range nads {
		if name, ok := owner(nad.Namespace); ok {
			r := row(name)
			r.Networks = append(r.Networks, nad.Namespace+"/"+nad.Name)
			platformNamespace(r, nad.Namespace)
		}
	}
	for _, p := range pods {
		name, ok := owner(p.Namespace)
		if !ok || p.Status.Phase != corev1.PodRunning {
			continue
		}
		r := row(name)
		platformNamespace(r, p.Namespace)
		r.Pods++
		r.Addresses += podAddresses(&p)
	}
	var out []tenantRow
	for _, name := range slices.Sorted(maps.Keys(rows)) {
		if name == platform {
			continue
		}
		out = append(out, *rows[name])
	}
	if r, ok := rows[platform]; ok {
		out = append(out, *r)
	}
	for i := range out {
		slices.Sort(out[i].Namespaces)
		out[i].Networks = slices.Compact(slices.Sorted(slices.Values(out[i].Networks)))
	}
	return out
}

// podAddresses counts a pod's addresses on all its networks, from its network-status, else
// its pod IPs.
func podAddresses(p *corev1.Pod) int {
	var st []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(p.Annotations[nadv1.NetworkStatusAnnot]), &st); err == nil && len(st) > 0 {
		n := 0
		for _, s := range st {
			n += len(s.IPs)
		}
		return n
	}
	return len(p.Status.PodIPs)
}

// printTenants prints the rows as a table; lists are comma-separated, "-" when empty.
func printTenants(w io.Writer, rows []tenantRow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tNAMESPACES\tPODS\tADDRESSES\tNETWORKS\tSR-IOV POOLS\tPEERS")
	list := func(xs []string) string {
		if len(xs) == 0 {
			return "-"
		}
		return strings.Join(xs, ",")
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.Tenant, list(r.Namespaces), r.Pods, r.Addresses, list(r.Networks), list(r.Pools), list(r.Peers))
	}
	tw.Flush()
	for _, r := range rows {
		for _, p := range r.Problems {
			fmt.Fprintf(w, "tenant %s: %s (left out)\n", r.Tenant, p)
		}
	}
}
