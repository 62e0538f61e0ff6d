package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/fabric/ipam"
)

// nodeView is what `loomctl status` shows of a node, all of it read from the API server.
type nodeView struct {
	Node       string         `json:"node"`
	Mode       string         `json:"mode"`
	UnderlayIP string         `json:"underlayIP,omitempty"`
	VTEP       *vtepView      `json:"vtep,omitempty"`
	Peers      []peerView     `json:"peers"`
	Blocks     []blockView    `json:"blocks"`
	Pods       []podView      `json:"pods"`
	Devices    []resourceView `json:"devices"`
	// Loomd is what the node's loomd says of itself; LoomdUnread says why it was not read.
	Loomd       *loomdState `json:"loomd,omitempty"`
	LoomdUnread string      `json:"loomdUnread,omitempty"`
}

type vtepView struct {
	Addr string `json:"addr"`
	MAC  string `json:"mac"`
}

// peerView is another node as this node's dataplane reaches it.
type peerView struct {
	Node       string `json:"node"`
	UnderlayIP string `json:"underlayIP"`
	VTEPAddr   string `json:"vtepAddr,omitempty"`
	VTEPMAC    string `json:"vtepMAC,omitempty"`
}

// blockView is an IPBlock the node owns.
type blockView struct {
	Pool   string `json:"pool"`
	CIDR   string `json:"cidr"`
	Tenant string `json:"tenant,omitempty"`
	InUse  int    `json:"inUse"`
	Size   int    `json:"size"`
}

// podView is a pod of the node with its attachments, as its network-status shows them.
type podView struct {
	Pod         string           `json:"pod"`
	Attachments []attachmentView `json:"attachments"`
}

type attachmentView struct {
	Interface string   `json:"interface"`
	Network   string   `json:"network"`
	IPs       []string `json:"ips"`
	Device    string   `json:"device,omitempty"`
}

// resourceView is a device plugin resource of the node, as the kubelet reports it.
type resourceView struct {
	Resource    string `json:"resource"`
	Capacity    int64  `json:"capacity"`
	Allocatable int64  `json:"allocatable"`
}

func newStatusCommand(getenv func(string) string) *cobra.Command {
	var f clusterFlags
	var metricsURL string
	cmd := &cobra.Command{
		Use:   "status NODE",
		Short: "Show a node's primary network, peers, address blocks, pods' attachments and SR-IOV pools",
		Long: `status shows what Loom set up on one node, as the cluster records it: the primary
network's mode and the node's VTEP, the other nodes its dataplane reaches (with their VTEPs in
vxlan modes), the address blocks it owns and how full they are, every pod on it with each
attachment's interface, network, addresses and device, and the device plugin resources (SR-IOV
pools) the kubelet reports for it. It reads any cluster through --kubeconfig ($KUBECONFIG), or
the simulated cluster of --dir.

What only the node's loomd knows (the policy engine's last sync, BGP sessions, VFs by state)
comes from its /metrics: read inside the node with --dir, else from --loomd-metrics, e.g.
after kubectl -n kube-system port-forward pod/<the node's loomd pod> 9465.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := clusterConfig(f.kubeconfig, f.dir)
			if err != nil {
				return err
			}
			mode := ""
			if f.dir != "" {
				c, oerr := sim.Open(f.dir)
				if oerr != nil {
					return oerr
				}
				mode = string(c.Options().Mode)
			}
			done := progressAfter(cmd.ErrOrStderr(), time.Second, "reading the node, its peers, blocks and pods…")
			v, err := readNode(cmd.Context(), rc, args[0], mode)
			if err == nil {
				v.Loomd, v.LoomdUnread = readLoomdState(cmd.Context(), f.dir, metricsURL, args[0])
			}
			done()
			if err != nil {
				return err
			}
			return f.write(cmd.OutOrStdout(), v, func(w io.Writer) { printNode(w, v) })
		},
	}
	f.add(cmd, getenv)
	cmd.Flags().StringVar(&metricsURL, "loomd-metrics", "", "URL of the node's loomd /metrics")
	return cmd
}

// readLoomdState asks the node's loomd for its state, or says why it could not.
func readLoomdState(ctx context.Context, dir, metricsURL, node string) (*loomdState, string) {
	var text string
	var err error
	switch {
	case metricsURL != "":
		text, err = fetch(ctx, metricsURL)
	case dir != "":
		var c *sim.Cluster
		if c, err = sim.Open(dir); err == nil {
			text, err = simLoomdMetrics(ctx, c, node)
		}
	default:
		return nil, "loomd serves it on the node's loopback: use --loomd-metrics"
	}
	if err == nil {
		var st loomdState
		if st, err = parseLoomdState(text); err == nil {
			return &st, ""
		}
	}
	return nil, err.Error()
}

// fetch GETs url and returns the body.
func fetch(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// loomdConfigMap is where the deployment keeps loomd's configuration, read for the mode.
const loomdConfigNamespace, loomdConfigMap = "kube-system", "loomd-config"

// readNode reads what `loomctl status` shows. The mode is loomd's configuration's in the
// deployment's ConfigMap, else mode.
func readNode(ctx context.Context, rc *rest.Config, name, mode string) (nodeView, error) {
	cs, err := newClients(rc)
	if err != nil {
		return nodeView{}, err
	}
	kube, dyn := cs.kube, cs.dyn
	node, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nodeView{}, fmt.Errorf("node %s: %w", name, err)
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nodeView{}, fmt.Errorf("list nodes: %w", err)
	}
	blocks, err := dyn.Resource(ipam.GVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nodeView{}, fmt.Errorf("list IPBlocks: %w", err)
	}
	pods, err := kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", name).String()})
	if err != nil {
		return nodeView{}, fmt.Errorf("list the pods of node %s: %w", name, err)
	}
	if cm, err := kube.CoreV1().ConfigMaps(loomdConfigNamespace).Get(ctx, loomdConfigMap, metav1.GetOptions{}); err == nil {
		mode = modeOf(cm.Data["loomd.yaml"])
	}
	if mode == "" {
		mode = "unknown"
	}
	v := nodeView{Node: name, Mode: mode, Peers: []peerView{}, Blocks: []blockView{}, Pods: []podView{}, Devices: []resourceView{}}
	a := node.Annotations
	v.UnderlayIP = a[fabric.AnnotationUnderlayIP]
	if a[fabric.AnnotationVTEPMAC] != "" {
		v.VTEP = &vtepView{Addr: a[fabric.AnnotationVTEPAddr], MAC: a[fabric.AnnotationVTEPMAC]}
	}
	for _, n := range nodes.Items {
		if n.Name == name {
			continue
		}
		v.Peers = append(v.Peers, peerView{Node: n.Name, UnderlayIP: n.Annotations[fabric.AnnotationUnderlayIP],
			VTEPAddr: n.Annotations[fabric.AnnotationVTEPAddr], VTEPMAC: n.Annotations[fabric.AnnotationVTEPMAC]})
	}
	for i := range blocks.Items {
		b, err := ipam.FromUnstructured(&blocks.Items[i])
		if err != nil || b.Spec.Node != name {
			continue
		}
		v.Blocks = append(v.Blocks, blockView{Pool: b.Spec.Pool, CIDR: b.Spec.CIDR, Tenant: b.Spec.Tenant,
			InUse: len(b.Spec.Allocations), Size: blockSize(b.Spec.CIDR)})
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodPending {
			continue
		}
		v.Pods = append(v.Pods, podOf(&p))
	}
	for res, q := range node.Status.Capacity {
		if !strings.Contains(string(res), "/") || strings.Contains(string(res), "kubernetes.io/") {
			continue
		}
		alloc := node.Status.Allocatable[res]
		v.Devices = append(v.Devices, resourceView{Resource: string(res), Capacity: q.Value(), Allocatable: alloc.Value()})
	}
	v.sort()
	return v, nil
}

// modeOf reads primaryNetwork.mode from loomd's configuration file; "vxlan" is its default.
func modeOf(config string) string {
	var c struct {
		DefaultNetwork string `json:"defaultNetwork"`
		Primary        *struct {
			Mode string `json:"mode"`
		} `json:"primaryNetwork"`
	}
	if err := yaml.Unmarshal([]byte(config), &c); err != nil {
		return "unknown"
	}
	switch {
	case c.Primary == nil:
		return "delegated to " + c.DefaultNetwork
	case c.Primary.Mode == "":
		return "vxlan"
	}
	return c.Primary.Mode
}

func blockSize(cidr string) int {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || p.Addr().BitLen()-p.Bits() > 30 {
		return 0
	}
	return 1 << (p.Addr().BitLen() - p.Bits())
}

// podOf reads a pod's attachments from its network-status.
func podOf(p *corev1.Pod) podView {
	pv := podView{Pod: p.Namespace + "/" + p.Name, Attachments: []attachmentView{}}
	var st []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(p.Annotations[nadv1.NetworkStatusAnnot]), &st); err != nil {
		return pv
	}
	for _, s := range st {
		av := attachmentView{Interface: s.Interface, Network: s.Name, IPs: s.IPs}
		if s.DeviceInfo != nil && s.DeviceInfo.Pci != nil {
			av.Device = s.DeviceInfo.Pci.PciAddress
		}
		pv.Attachments = append(pv.Attachments, av)
	}
	return pv
}

func (v *nodeView) sort() {
	slices.SortFunc(v.Peers, func(a, b peerView) int { return strings.Compare(a.Node, b.Node) })
	slices.SortFunc(v.Blocks, func(a, b blockView) int { return strings.Compare(a.Pool+a.CIDR, b.Pool+b.CIDR) })
	slices.SortFunc(v.Pods, func(a, b podView) int { return strings.Compare(a.Pod, b.Pod) })
	slices.SortFunc(v.Devices, func(a, b resourceView) int { return strings.Compare(a.Resource, b.Resource) })
}

// printNode prints the view as a header and one table per section.
func printNode(w io.Writer, v nodeView) {
	fmt.Fprintf(w, "node %s: primary network %s, underlay %s", v.Node, v.Mode, orDash(v.UnderlayIP))
	if v.VTEP != nil {
		fmt.Fprintf(w, ", VTEP %s %s", v.VTEP.Addr, v.VTEP.MAC)
	}
	fmt.Fprintln(w)
	section := func(title, header string, rows [][]string) {
		fmt.Fprintf(w, "\n%s\n", title)
		if len(rows) == 0 {
			fmt.Fprintln(w, "  (none)")
			return
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  "+header)
		for _, r := range rows {
			fmt.Fprintln(tw, "  "+strings.Join(r, "\t"))
		}
		tw.Flush()
	}
	var rows [][]string
	for _, p := range v.Peers {
		rows = append(rows, []string{p.Node, orDash(p.UnderlayIP), orDash(p.VTEPAddr), orDash(p.VTEPMAC)})
	}
	section("peers", "NODE\tUNDERLAY\tVTEP ADDR\tVTEP MAC", rows)
	rows = nil
	for _, b := range v.Blocks {
		rows = append(rows, []string{b.Pool, b.CIDR, orDash(b.Tenant), fmt.Sprintf("%d/%d", b.InUse, b.Size)})
	}
	section("address blocks", "POOL\tBLOCK\tTENANT\tIN USE", rows)
	rows = nil
	for _, p := range v.Pods {
		for _, a := range p.Attachments {
			rows = append(rows, []string{p.Pod, a.Interface, a.Network, orDash(strings.Join(a.IPs, ",")), orDash(a.Device)})
		}
		if len(p.Attachments) == 0 {
			rows = append(rows, []string{p.Pod, "-", "-", "-", "-"})
		}
	}
	section("attachments", "POD\tINTERFACE\tNETWORK\tADDRESSES\tDEVICE", rows)
	rows = nil
	for _, d := range v.Devices {
		rows = append(rows, []string{d.Resource, fmt.Sprint(d.Capacity), fmt.Sprint(d.Allocatable)})
	}
	section("device plugin resources", "RESOURCE\tCAPACITY\tALLOCATABLE", rows)
	printLoomdState(w, v.Loomd, v.LoomdUnread)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
