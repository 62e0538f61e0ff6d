package podruntime

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// errNoNetwork is kubelet's NetworkPluginNotReady: no CNI configuration yet.
var errNoNetwork = errors.New("cni plugin not initialized: no network config found")

// loadNetwork loads the lexicographically first configuration file (.conf, .conflist,
// .json) in dir, as containerd's CRI plugin does for the pod network.
func loadNetwork(dir string) (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("read CNI configuration directory %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w in %s", errNoNetwork, dir)
	}
	sort.Strings(files)
	if strings.HasSuffix(files[0], ".conflist") {
		return libcni.ConfListFromFile(files[0])
	}
	conf, err := libcni.ConfFromFile(files[0])
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromConf(conf)
}

// cniArgs are the CNI_ARGS containerd passes for a pod sandbox.
func cniArgs(pod *corev1.Pod, containerID string) [][2]string {
	return [][2]string{
		{"IgnoreUnknown", "1"},
		{"K8S_POD_NAMESPACE", pod.Namespace},
		{"K8S_POD_NAME", pod.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", containerID},
		{"K8S_POD_UID", string(pod.UID)},
	}
}

// portMapping is an entry of the portMappings capability (containerd's go-cni PortMapping).
type portMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// bandwidth is the bandwidth capability (go-cni BandWidth), in bits per second.
type bandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// Pod annotations that ask for traffic shaping (kubelet's bandwidth package).
const (
	ingressBandwidthAnnotation = "kubernetes.io/ingress-bandwidth"
	egressBandwidthAnnotation  = "kubernetes.io/egress-bandwidth"
	podAnnotationsCapability   = "io.kubernetes.cri.pod-annotations"
)

// capabilityArgs builds the runtimeConfig capability arguments containerd passes for a pod:
// portMappings for container ports with a hostPort, bandwidth from the pod's bandwidth
// annotations (burst unlimited, as containerd sets it) and the pod's annotations. A bad
// bandwidth annotation fails the sandbox, as it does in kubelet.
func capabilityArgs(pod *corev1.Pod) (map[string]json.RawMessage, error) {
	caps := map[string]any{}
	var ports []portMapping
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort <= 0 {
				continue
			}
			proto := strings.ToLower(string(p.Protocol))
			if proto == "" {
				proto = "tcp"
			}
			ports = append(ports, portMapping{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: proto, HostIP: p.HostIP})
		}
	}
	if len(ports) > 0 {
		caps["portMappings"] = ports
	}
	var bw bandwidth
	for _, a := range []struct {
		key         string
		rate, burst *uint64
	}{{ingressBandwidthAnnotation, &bw.IngressRate, &bw.IngressBurst}, {egressBandwidthAnnotation, &bw.EgressRate, &bw.EgressBurst}} {
		v, ok := pod.Annotations[a.key]
		if !ok {
			continue
		}
		rate, err := parseBandwidth(v)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", a.key, err)
		}
		*a.rate, *a.burst = rate, math.MaxUint32
	}
	if bw != (bandwidth{}) {
		caps["bandwidth"] = bw
	}
	annotations := pod.Annotations
	if annotations == nil {
		annotations = map[string]string{}
	}
	caps[podAnnotationsCapability] = annotations
	out := make(map[string]json.RawMessage, len(caps))
	for k, v := range caps {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		out[k] = b
	}
	return out, nil
}

// parseBandwidth parses a bandwidth quantity within kubelet's bounds (1k to 1P bits/s).
func parseBandwidth(v string) (uint64, error) {
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return 0, err
	}
	if q.Cmp(resource.MustParse("1k")) < 0 {
		return 0, fmt.Errorf("resource is unreasonably small (< 1kbit)")
	}
	if q.Cmp(resource.MustParse("1P")) > 0 {
		return 0, fmt.Errorf("resource is unreasonably large (> 1Pbit)")
	}
	return uint64(q.Value()), nil
}

// resultIPs returns the addresses ADD's result gives the sandbox's ifName, or every address
// when the result names no interfaces.
func resultIPs(r types.Result, ifName string) ([]string, error) {
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("convert CNI result: %w", err)
	}
	var mine, all []string
	for _, ip := range res.IPs {
		all = append(all, ip.Address.IP.String())
		if ip.Interface != nil && *ip.Interface >= 0 && *ip.Interface < len(res.Interfaces) {
			iface := res.Interfaces[*ip.Interface]
			if iface.Name == ifName && iface.Sandbox != "" {
				mine = append(mine, ip.Address.IP.String())
			}
		}
	}
	if len(mine) > 0 {
		return mine, nil
	}
	return all, nil
}
