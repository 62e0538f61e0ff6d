package podruntime

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCapabilityArgs(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			"kubernetes.io/ingress-bandwidth": "10M",
			"k8s.v1.cni.cncf.io/networks":     "net-a",
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{
			{ContainerPort: 80, HostPort: 8080, Protocol: corev1.ProtocolTCP},
			{ContainerPort: 53, HostPort: 5353, Protocol: corev1.ProtocolUDP, HostIP: "198.18.1.11"},
			{ContainerPort: 9090}, // no hostPort: not mapped
		}}}},
	}
	caps, err := capabilityArgs(pod)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"portMappings":           `[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"198.18.1.11"}]`,
		"bandwidth":              `{"ingressRate":10000000,"ingressBurst":4294967295}`,
		podAnnotationsCapability: `{"k8s.v1.cni.cncf.io/networks":"net-a","kubernetes.io/ingress-bandwidth":"10M"}`,
	}
	if len(caps) != len(want) {
		t.Errorf("capabilities %v, want keys of %v", caps, want)
	}
	for k, v := range want {
		if string(caps[k]) != v {
			t.Errorf("%s = %s, want %s", k, caps[k], v)
		}
	}

	// A pod without ports or bandwidth still passes its (empty) annotations.
	caps, err = capabilityArgs(&corev1.Pod{})
	if err != nil || len(caps) != 1 || string(caps[podAnnotationsCapability]) != "{}" {
		t.Errorf("bare pod: %v, %v", caps, err)
	}

	for _, bad := range []string{"10", "2P", "fast"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"kubernetes.io/egress-bandwidth": bad}}}
		if _, err := capabilityArgs(pod); err == nil {
			t.Errorf("egress bandwidth %q accepted", bad)
		}
	}
}

func TestCapabilityArgsSurviveTheRecord(t *testing.T) {
	// Rates must reach DEL as integers after a round trip through the sandbox record.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"kubernetes.io/egress-bandwidth": "1G"}}}
	caps, err := capabilityArgs(pod)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(Sandbox{CapabilityArgs: caps})
	var sb Sandbox
	if err := json.Unmarshal(b, &sb); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(sb.runtimeConf().CapabilityArgs["bandwidth"])
	if string(out) != `{"egressRate":1000000000,"egressBurst":4294967295}` {
		t.Errorf("bandwidth after the record: %s", out)
	}
}

func TestCNIArgs(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u-1"}}
	want := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "ns"}, {"K8S_POD_NAME", "p"},
		{"K8S_POD_INFRA_CONTAINER_ID", "abc"}, {"K8S_POD_UID", "u-1"}}
	if got := cniArgs(pod, "abc"); !reflect.DeepEqual(got, want) {
		t.Errorf("cniArgs = %v, want %v", got, want)
	}
}

func TestLoadNetwork(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadNetwork(dir); err == nil {
		t.Fatal("empty directory gave a network")
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("20-b.conflist", `{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}`)
	write(".10-hidden.tmp", `not a config`)
	write("10-a.conf", `{"cniVersion":"1.0.0","name":"a","type":"ptp"}`)
	conf, err := loadNetwork(dir)
	if err != nil {
		t.Fatal(err)
	}
	if conf.Name != "a" || len(conf.Plugins) != 1 || conf.Plugins[0].Network.Type != "ptp" {
		t.Errorf("loaded %s with %d plugins, want a (ptp), the first file", conf.Name, len(conf.Plugins))
	}
}

func TestResultIPs(t *testing.T) {
	zero, one := 0, 1
	res := &current.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*current.Interface{{Name: "cni0"}, {Name: "eth0", Sandbox: "/run/netns/x"}},
		IPs: []*current.IPConfig{
			{Interface: &zero, Address: mustCIDR(t, "10.244.1.1/24")},
			{Interface: &one, Address: mustCIDR(t, "10.244.1.5/24")},
		},
	}
	if got, err := resultIPs(res, "eth0"); err != nil || !reflect.DeepEqual(got, []string{"10.244.1.5"}) {
		t.Errorf("resultIPs = %v, %v; want the sandbox's eth0 address", got, err)
	}
	res.Interfaces = nil
	res.IPs[0].Interface, res.IPs[1].Interface = nil, nil
	if got, _ := resultIPs(res, "eth0"); len(got) != 2 {
		t.Errorf("without interfaces resultIPs = %v, want every address", got)
	}
}

func mustCIDR(t *testing.T, s string) net.IPNet {
	t.Helper()
	n, err := types.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return *n
}
