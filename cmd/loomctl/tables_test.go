package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/tenants"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (rerun with -update if the change is meant):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func tenantObject(name, spec string) *tenants.Object {
	o := &tenants.Object{}
	o.Name = name
	if err := jsonUnmarshal([]byte(spec), &o.Spec); err != nil {
		panic(err)
	}
	return o
}

func TestTenantsTable(t *testing.T) {
	acme, acmeProblems := tenants.Parse(tenantObject("acme", `{"namespaceSelector":{"matchLabels":{"tenant":"acme"}},
		"sharedNetworks":["infra/storage"],"sriov":{"pools":["loom.dev/sriov_net_a"]},"peers":["globex"],"vlans":["5000"]}`))
	globex, _ := tenants.Parse(tenantObject("globex", `{"namespaceSelector":{"matchLabels":{"tenant":"globex"}},"peers":["acme"]}`))
	dir := tenants.NewDirectory([]tenants.Tenant{acme, globex}, map[string]map[string]string{
		"acme-web": {"tenant": "acme"}, "acme-db": {"tenant": "acme"}, "globex": {"tenant": "globex"},
		"infra": nil, "kube-system": nil,
	})
	problems := map[tenants.Name][]string{}
	for _, p := range acmeProblems {
		problems[acme.Name] = append(problems[acme.Name], p.Error())
	}
	nad := func(ns, name string) nadv1.NetworkAttachmentDefinition {
		return nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	pod := func(ns, name string, phase corev1.PodPhase, status string) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Status: corev1.PodStatus{Phase: phase,
			PodIPs: []corev1.PodIP{{IP: "10.244.0.9"}}}}
		if status != "" {
			p.Annotations = map[string]string{nadv1.NetworkStatusAnnot: status}
		}
		return p
	}
	twoNets := `[{"name":"loom","ips":["10.244.1.2"],"default":true},{"name":"acme-web/net1","interface":"net1","ips":["192.168.1.2","fd00::2"]}]`
	rows := tenantRows(dir, problems,
		[]nadv1.NetworkAttachmentDefinition{nad("acme-web", "net1"), nad("infra", "storage"), nad("globex", "data"), nad("acme-db", "net1")},
		[]corev1.Pod{
			pod("acme-web", "web-1", corev1.PodRunning, twoNets),
			pod("acme-db", "db-1", corev1.PodRunning, ""),
			pod("acme-db", "db-2", corev1.PodPending, ""),
			pod("globex", "api", corev1.PodRunning, ""),
			pod("kube-system", "dns", corev1.PodRunning, ""),
			pod("infra", "nfs", corev1.PodSucceeded, ""),
		})
	var b bytes.Buffer
	printTenants(&b, rows)
	golden(t, "tenants.golden", b.Bytes())
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func TestStatusTable(t *testing.T) {
	v := nodeView{Node: "node1", Mode: "vxlan", UnderlayIP: "198.18.1.11", VTEP: &vtepView{Addr: "10.244.29.0", MAC: "02:aa:bb:cc:dd:01"},
		Peers:  []peerView{{Node: "node2", UnderlayIP: "198.18.1.12", VTEPAddr: "10.244.75.64", VTEPMAC: "02:aa:bb:cc:dd:02"}, {Node: "node3", UnderlayIP: "198.19.1.13"}},
		Blocks: []blockView{{Pool: "default", CIDR: "10.244.29.0/26", InUse: 3, Size: 64}, {Pool: "tenant-a-main", CIDR: "10.244.240.0/28", Tenant: "a", InUse: 1, Size: 16}},
		Pods: []podView{
			{Pod: "demo/vf-1", Attachments: []attachmentView{{Interface: "eth0", Network: "loom", IPs: []string{"10.244.29.3"}},
				{Interface: "net1", Network: "demo/sriov-a", IPs: []string{"192.168.80.64"}, Device: "0000:3b:02.0"}}},
			{Pod: "demo/starting"},
		},
		Devices: []resourceView{{Resource: "loom.dev/sriov_net_a", Capacity: 4, Allocatable: 4}},
	}
	st, err := parseLoomdState(`# HELP loom_policy_pods pods
# TYPE loom_policy_pods gauge
loom_policy_pods 3
# TYPE loom_policy_rules gauge
loom_policy_rules{table="node"} 40
loom_policy_rules{table="pod"} 12
# TYPE loom_policy_last_sync_failed gauge
loom_policy_last_sync_failed 0
# TYPE loom_policy_last_sync_duration_seconds gauge
loom_policy_last_sync_duration_seconds 0.0042
# TYPE loom_policy_sync_errors_total counter
loom_policy_sync_errors_total 2
# TYPE loom_policy_repairs_total counter
loom_policy_repairs_total 1
# TYPE loom_bgp_sessions gauge
loom_bgp_sessions{peer="198.18.1.254",state="established"} 1
loom_bgp_sessions{peer="198.18.1.12",state="active"} 1
# TYPE loom_bgp_received_routes gauge
loom_bgp_received_routes{peer="198.18.1.254"} 7
# TYPE loom_sriov_vfs gauge
loom_sriov_vfs{pool="loom.dev/sriov_net_a",state="available"} 3
loom_sriov_vfs{pool="loom.dev/sriov_net_a",state="attached"} 1
`)
	if err != nil {
		t.Fatal(err)
	}
	v.Loomd = &st
	var b bytes.Buffer
	printNode(&b, v)
	printNode(&b, nodeView{Node: "lonely", Mode: "bgp", LoomdUnread: "loomd serves it on the node's loopback: use --loomd-metrics"})
	if _, err := parseLoomdState("not metrics {"); err == nil {
		t.Error("text that is not in the exposition format was read")
	}
	golden(t, "status.golden", b.Bytes())
	if got := modeOf("primaryNetwork: {mode: bgp, clusterCIDR: 10.244.0.0/16}\n"); got != "bgp" {
		t.Errorf("mode of a bgp configuration: %q", got)
	}
	if got := modeOf("primaryNetwork: {clusterCIDR: 10.244.0.0/16}\n"); got != "vxlan" {
		t.Errorf("mode of the default configuration: %q", got)
	}
	if got := modeOf("defaultNetwork: flannel\n"); got != "delegated to flannel" {
		t.Errorf("mode without a primary network: %q", got)
	}
}
