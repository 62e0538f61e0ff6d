package tenants

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func nad(ns, name, config string, annotations map[string]string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
}

func TestNetworkOf(t *testing.T) {
	tests := []struct {
		name    string
		config  string
		want    []int
		wantErr string
	}{
		{name: "no vlan", config: `{"cniVersion":"1.0.0","type":"macvlan","master":"eth0"}`},
		{name: "sriov vlan", config: `{"type":"sriov","vlan":100,"vlanQoS":3}`, want: []int{100}},
		{name: "vlan plugin vlanId", config: `{"type":"vlan","master":"eth0","vlanId":42}`, want: []int{42}},
		{name: "vlan 0 is untagged", config: `{"type":"sriov","vlan":0}`},
		{name: "null is untagged", config: `{"type":"sriov","vlan":null}`},
		{name: "key case", config: `{"type":"sriov","VLAN":7,"VlanID":8}`, want: []int{7, 8}},
		{name: "exponent", config: `{"type":"sriov","vlan":1e2}`, want: []int{100}},
		{
			name:   "conflist",
			config: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"vlan","vlanId":300},{"type":"sriov","vlan":200},{"type":"tuning"},{"type":"x","vlan":300}]}`,
			want:   []int{200, 300},
		},
		{
			name:   "bridge trunk",
			config: `{"type":"bridge","vlan":5,"vlanTrunk":[{"id":10},{"minID":20,"maxID":22},{}]}`,
			want:   []int{5, 10, 20, 21, 22},
		},
		{name: "ovs trunk", config: `{"plugins":[{"type":"ovs","trunk":[{"ID":9}]}]}`, want: []int{9}},
		{name: "bad json", config: `{"type":"sriov",`, wantErr: "parse configuration"},
		{name: "trailing data", config: `{"type":"sriov"} {}`, wantErr: "data after"},
		{name: "not an object", config: `["sriov"]`, wantErr: "not a JSON object"},
		{name: "vlan string", config: `{"type":"sriov","vlan":"100"}`, wantErr: `"vlan": "100" is not a VLAN ID`},
		{name: "vlan too big", config: `{"type":"sriov","vlan":4095}`, wantErr: "4095 is not a VLAN ID"},
		{name: "vlan negative", config: `{"type":"sriov","vlan":-1}`, wantErr: "-1 is not a VLAN ID"},
		{name: "vlan fraction", config: `{"type":"sriov","vlan":1.5}`, wantErr: "1.5 is not a VLAN ID"},
		{name: "vlan huge", config: `{"type":"sriov","vlan":1e400}`, wantErr: "not a VLAN ID"},
		{name: "plugins not a list", config: `{"plugins":{"type":"sriov"}}`, wantErr: "not a list"},
		{name: "plugin not an object", config: `{"plugins":["sriov"]}`, wantErr: "plugins[0] is not a JSON object"},
		{name: "bad vlan in plugin", config: `{"plugins":[{"type":"a"},{"type":"vlan","vlanId":true}]}`, wantErr: `plugins[1]: "vlanId": true is not a VLAN ID`},
		{name: "trunk not a list", config: `{"type":"bridge","vlanTrunk":5}`, wantErr: "not a list of trunk entries"},
		{name: "trunk id 0", config: `{"type":"bridge","vlanTrunk":[{"id":0}]}`, wantErr: "0 is not a VLAN ID"},
		{name: "trunk half range", config: `{"type":"bridge","vlanTrunk":[{"minID":3}]}`, wantErr: "entry 0 is not an id"},
		{name: "nested vlan", config: `{"type":"meta","delegates":[{"type":"sriov","vlan":12}],"delegate":{"type":"bridge","ipam":{"type":"x","VLAN":13}}}`, want: []int{12, 13}},
		{name: "delegates not a list", config: `{"type":"meta","delegates":{"type":"sriov"}}`, wantErr: `"delegates" is not a list`},
		{name: "trunk reversed", config: `{"type":"bridge","vlanTrunk":[{"minID":30,"maxID":3}]}`, wantErr: "entry 0 is not an id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NetworkOf(nad("team-a", "net-a", tt.config, nil))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NetworkOf() error = %v, want one with %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "team-a/net-a") {
					t.Errorf("error %q does not name the NAD", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NetworkOf() error = %v", err)
			}
			if !reflect.DeepEqual(got.VLANs, tt.want) || got.Ref != (NetworkRef{"team-a", "net-a"}) || got.NodeConfig {
				t.Errorf("NetworkOf() = %+v, want VLANs %v", got, tt.want)
			}
		})
	}
}

func TestNetworkOfResourceAndNodeConfig(t *testing.T) {
	got, err := NetworkOf(nad("team-a", "vf", `{"type":"sriov"}`, map[string]string{ResourceNameAnnotation: "loom.dev/sriov_net_a"}))
	if err != nil || got.ResourceName != "loom.dev/sriov_net_a" {
		t.Errorf("NetworkOf() = %+v, %v, want resource loom.dev/sriov_net_a", got, err)
	}
	got, err = NetworkOf(nad("team-a", "file", " \n", nil))
	if err != nil || !got.NodeConfig || len(got.VLANs) != 0 {
		t.Errorf("NetworkOf(no config) = %+v, %v, want NodeConfig", got, err)
	}
}

func TestNetAdminReason(t *testing.T) {
	caps := func(c ...corev1.Capability) *corev1.SecurityContext {
		return &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: c}}
	}
	tests := []struct {
		name string
		spec *corev1.PodSpec
		want string
	}{
		{name: "nil", spec: nil},
		{name: "plain", spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}},
		{name: "harmless caps", spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "app", SecurityContext: caps("NET_BIND_SERVICE", "CHOWN")}}}},
		{name: "net raw", spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "x", SecurityContext: caps("NET_RAW")}}}, want: "container x adds NET_RAW"},
		{name: "privileged false", spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "app", SecurityContext: &corev1.SecurityContext{Privileged: ptr(false)}}}}},
		{name: "host network", spec: &corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{Name: "app"}}}, want: "hostNetwork"},
		{name: "net admin", spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}, {Name: "x", SecurityContext: caps("NET_ADMIN")}}}, want: "container x adds NET_ADMIN"},
		{name: "cap prefix lower case", spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "x", SecurityContext: caps("cap_net_admin")}}}, want: "container x adds cap_net_admin"},
		{name: "sys admin", spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "x", SecurityContext: caps("SYS_ADMIN")}}}, want: "container x adds SYS_ADMIN"},
		{name: "all", spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "x", SecurityContext: caps("ALL")}}}, want: "container x adds ALL"},
		{name: "privileged", spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "x", SecurityContext: &corev1.SecurityContext{Privileged: ptr(true)}}}}, want: "container x is privileged"},
		{name: "init container", spec: &corev1.PodSpec{InitContainers: []corev1.Container{{Name: "setup", SecurityContext: caps("NET_ADMIN")}}}, want: "init container setup adds NET_ADMIN"},
		{
			name: "ephemeral container",
			spec: &corev1.PodSpec{EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debug", SecurityContext: &corev1.SecurityContext{Privileged: ptr(true)}}}}},
			want: "ephemeral container debug is privileged",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NetAdminReason(tt.spec); got != tt.want {
				t.Errorf("NetAdminReason() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDeviceRequests(t *testing.T) {
	vf := func(req, lim int64) corev1.ResourceRequirements {
		r := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
		if req > 0 {
			r.Requests["loom.dev/a"] = *resource.NewQuantity(req, resource.DecimalSI)
		}
		if lim > 0 {
			r.Limits["loom.dev/a"] = *resource.NewQuantity(lim, resource.DecimalSI)
		}
		r.Limits["example.com/gpu"] = *resource.NewQuantity(1, resource.DecimalSI)
		return r
	}
	isVF := func(name string) bool { return name == "loom.dev/a" || name == "loom.dev/b" }
	always := corev1.ContainerRestartPolicyAlways
	spec := &corev1.PodSpec{
		Containers:     []corev1.Container{{Resources: vf(1, 1)}, {Resources: vf(0, 2)}},
		InitContainers: []corev1.Container{{Resources: vf(2, 0)}, {Resources: vf(1, 1), RestartPolicy: &always}},
	}
	if got := DeviceRequests(spec, isVF); len(got) != 1 || got["loom.dev/a"] != 4 {
		t.Errorf("DeviceRequests() = %v, want loom.dev/a: 4 (1 + 2 + a sidecar's 1)", got)
	}
	spec.InitContainers[0].Resources = vf(7, 7)
	if got := DeviceRequests(spec, isVF); got["loom.dev/a"] != 7 {
		t.Errorf("DeviceRequests() = %v, want loom.dev/a: 7 (an init container's)", got)
	}
	if got := DeviceRequests(spec, func(string) bool { return false }); len(got) != 0 {
		t.Errorf("DeviceRequests(no pools) = %v", got)
	}
	spec.Containers[0].Resources.Limits["loom.dev/b"] = *resource.NewQuantity(2, resource.DecimalSI)
	if got := DeviceRequests(spec, isVF); got["loom.dev/b"] != 2 || got["loom.dev/a"] != 7 {
		t.Errorf("DeviceRequests(two pools) = %v", got)
	}
	pods := []*corev1.Pod{{Spec: *spec}, {Spec: *spec, Status: corev1.PodStatus{Phase: corev1.PodSucceeded}},
		{Spec: corev1.PodSpec{Containers: []corev1.Container{{Resources: vf(0, 3)}}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}}
	if got := HeldVFs(pods, isVF); got != 7+2+3 {
		t.Errorf("HeldVFs() = %d, want 12: the finished pod holds none", got)
	}
}

func TestContainerHostPorts(t *testing.T) {
	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "init", Ports: []corev1.ContainerPort{{ContainerPort: 1, HostPort: 4789, Protocol: corev1.ProtocolUDP}}}},
		Containers:     []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 80}, {ContainerPort: 8080, HostPort: 30001}}}},
	}
	got := ContainerHostPorts(spec)
	want := []HostPort{
		{Field: "spec.initContainers[init].ports[0].hostPort", Port: 4789, Protocol: "udp"},
		{Field: "spec.containers[app].ports[1].hostPort", Port: 30001, Protocol: "tcp"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("ContainerHostPorts() = %+v, want %+v", got, want)
	}
}
