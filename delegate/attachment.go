package delegate

import (
	"context"
	"encoding/json"

	"github.com/containernetworking/cni/pkg/types"
)

// ContainerID is the runtime's sandbox container ID (CNI_CONTAINERID).
type ContainerID string

// PodUID is the Kubernetes UID of a pod (K8S_POD_UID).
type PodUID string

// PodRef names the pod an attachment belongs to.
type PodRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       PodUID `json:"uid"`
}

func (p PodRef) String() string { return p.Namespace + "/" + p.Name }

// KindCNI is the attachment kind that runs a CNI network configuration list through libcni.
const KindCNI = "cni"

// Spec is one attachment of a pod, resolved and validated: everything needed to attach it and,
// later, to detach it without asking the API server. Specs are values; the ledger stores them.
type Spec struct {
	// Network names the network as network-status shows it: "namespace/name" of a
	// NetworkAttachmentDefinition, or the name of a configuration file's network.
	Network string `json:"network"`
	// NetworkUID is the UID of the NetworkAttachmentDefinition, empty for a file.
	NetworkUID string `json:"networkUID,omitempty"`
	// Ifname is the interface name inside the pod.
	Ifname string `json:"ifname"`
	// Default marks the pod's default (primary) network.
	Default bool `json:"default,omitempty"`
	// Kind selects the Attachment implementation; KindCNI for delegates run through libcni.
	Kind string `json:"kind"`
	// Plugin is the type of the configuration's first plugin (macvlan, bridge, loom-primary...), which
	// metrics break delegate calls down by. Records written before it existed lack it:
	// PluginType reads it from Config then.
	Plugin string `json:"plugin,omitempty"`
	// Config is the network configuration for Kind; for KindCNI a conflist, with its name
	// injected and the annotation's cni-args merged in.
	Config json.RawMessage `json:"config"`
	// CapabilityArgs become the delegate's runtimeConfig: kubelet's for the default network,
	// the annotation's (ips, mac, portMappings, bandwidth, deviceID...) for the others.
	CapabilityArgs map[string]any `json:"capabilityArgs,omitempty"`
	// DefaultRoute lists the gateways the pod asked this attachment to carry the default
	// route through ("default-route" in the annotation).
	DefaultRoute []string `json:"defaultRoute,omitempty"`
	// Resource is the device plugin resource the NetworkAttachmentDefinition names
	// (k8s.v1.cni.cncf.io/resourceName), "" for none. loomd puts the device the kubelet
	// allocated to the pod into Config as "deviceID" before the attachment runs.
	Resource string `json:"resource,omitempty"`
}

// Call is one invocation of an Attachment: a Spec applied to a container.
type Call struct {
	Spec
	ContainerID ContainerID
	Netns       string
	Pod         PodRef
}

// An Attachment is a network type: it attaches, checks and detaches one interface of a pod.
// Implementations hold no per-pod state; everything per pod arrives in the Call.
type Attachment interface {
	// Add creates the interface and returns its result.
	Add(ctx context.Context, c Call) (types.Result, error)
	// Check verifies the interface still matches prev, the result Add returned.
	Check(ctx context.Context, c Call, prev types.Result) error
	// Del removes the interface and releases what it holds. It succeeds when there is nothing
	// left to remove, and it must work when the netns is already gone. prev may be nil.
	Del(ctx context.Context, c Call, prev types.Result) error
}

// A Collector is an Attachment that can release leaked resources: everything of the networks
// in known that is not held by an attachment in live.
type Collector interface {
	GC(ctx context.Context, known []Spec, live []Call) error
}

// A StatusReporter is an Attachment that can tell whether a network is ready for ADDs.
type StatusReporter interface {
	Status(ctx context.Context, s Spec) error
}

// A DeviceReporter is an Attachment whose interfaces are devices: it gives the NPWG
// device-info object of the device a call attached, which network-status carries.
type DeviceReporter interface {
	DeviceInfo(c Call, res types.Result) (json.RawMessage, error)
}

// Outcome is an attachment that was made: its Spec, the result its Attachment returned, and
// the NPWG device-info the attachment produced, if any.
type Outcome struct {
	Spec
	Result     types.Result
	DeviceInfo json.RawMessage
}

// PluginType is the type of the configuration's first plugin: Plugin, or for a record written
// before Plugin existed, what Config says. It is "" when Config does not say either.
func (s Spec) PluginType() string {
	if s.Plugin != "" || len(s.Config) == 0 {
		return s.Plugin
	}
	var conf struct {
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(s.Config, &conf); err != nil {
		return ""
	}
	if len(conf.Plugins) > 0 {
		return conf.Plugins[0].Type
	}
	return conf.Type
}
