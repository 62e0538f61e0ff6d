package attach

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/loom-cni/loom/delegate"
)

// ipamCall is one run of the IPAM plugin for an interface.
type ipamCall struct {
	command     string // ADD, CHECK or DEL
	containerID delegate.ContainerID
	netns       string
	ifname      string
	pod         delegate.PodRef
	// capabilityArgs become the runtimeConfig of the capabilities the plugin declares.
	capabilityArgs map[string]any
	// prev is given as prevResult, when not nil.
	prev types.Result
}

// ipam runs the network's IPAM plugin as a CNI binary found in the configured CNI path, with
// every CNI_* variable set from the call rather than from loomd's environment, and the
// Kubernetes pod arguments Multus-compatible IPAM plugins (whereabouts) read in CNI_ARGS.
// ADD returns the plugin's result; CHECK and DEL return none.
func (a *Attachment) ipam(ctx context.Context, n network, c ipamCall) (types.Result, error) {
	conf, err := ipamConf(n, c)
	if err != nil {
		return nil, err
	}
	path, err := invoke.FindInPath(n.ipamType, a.cniPath)
	if err != nil {
		return nil, fmt.Errorf("ipam plugin %q of network %s: %w", n.ipamType, n.name, err)
	}
	args := &invoke.Args{
		Command:     c.command,
		ContainerID: string(c.containerID),
		NetNS:       c.netns,
		IfName:      c.ifname,
		Path:        strings.Join(a.cniPath, ":"),
		PluginArgs: [][2]string{
			{"IgnoreUnknown", "true"},
			{"K8S_POD_NAMESPACE", c.pod.Namespace},
			{"K8S_POD_NAME", c.pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", string(c.containerID)},
			{"K8S_POD_UID", string(c.pod.UID)},
		},
	}
	if c.command == "ADD" {
		res, err := invoke.ExecPluginWithResult(ctx, path, conf, args, a.exec)
		if err != nil {
			return nil, fmt.Errorf("ipam %s %s of network %s: %w", n.ipamType, c.command, n.name, err)
		}
		return res, nil
	}
	if err := invoke.ExecPluginWithoutResult(ctx, path, conf, args, a.exec); err != nil {
		return nil, fmt.Errorf("ipam %s %s of network %s: %w", n.ipamType, c.command, n.name, err)
	}
	return nil, nil
}

// ipamConf is the plugin configuration with the runtimeConfig of the capabilities it declares
// (as libcni injects them) and the previous result.
func ipamConf(n network, c ipamCall) ([]byte, error) {
	conf, err := decodeObject(n.plugin)
	if err != nil {
		return nil, fmt.Errorf("ipam configuration of network %s: %w", n.name, err)
	}
	rc := map[string]any{}
	for k, v := range c.capabilityArgs {
		if n.capabilities[k] {
			rc[k] = v
		}
	}
	if len(rc) > 0 {
		conf["runtimeConfig"] = rc
	}
	if c.prev != nil {
		prev, perr := c.prev.GetAsVersion(n.cniVersion)
		if perr != nil {
			return nil, fmt.Errorf("ipam configuration of network %s: previous result: %w", n.name, perr)
		}
		conf["prevResult"] = prev
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return nil, fmt.Errorf("ipam configuration of network %s: %w", n.name, err)
	}
	return b, nil
}
