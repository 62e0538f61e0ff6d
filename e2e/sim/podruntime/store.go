package podruntime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"k8s.io/apimachinery/pkg/types"
)

// Sandbox is the record of one pod sandbox: what a later DEL needs, and whom it is for.
type Sandbox struct {
	// ContainerID is the sandbox's id, 64 hex digits, passed to CNI as CNI_CONTAINERID.
	ContainerID string `json:"containerID"`
	// NetNS is the pinned network namespace's path inside the node (/run/netns/NAME).
	NetNS     string    `json:"netns"`
	Namespace string    `json:"namespace"`
	Pod       string    `json:"pod"`
	UID       types.UID `json:"uid"`
	// Network is the name of the CNI configuration ADD used.
	Network string `json:"network"`
	IfName  string `json:"ifname"`
	// Args and CapabilityArgs are CNI_ARGS and runtimeConfig as given to ADD; DEL gets the
	// same, as containerd does.
	Args           [][2]string                `json:"args"`
	CapabilityArgs map[string]json.RawMessage `json:"capabilityArgs,omitempty"`
	// IPs are eth0's addresses from ADD's result.
	IPs []string `json:"ips,omitempty"`
	// AddTime is how long CNI ADD took, for benchmarks.
	AddTime time.Duration `json:"addTime,omitempty"`
	// Devices are the devices allocated to the pod's containers before ADD.
	Devices []ContainerDevices `json:"devices,omitempty"`
	// Ready is set once ADD succeeded; a record without it is a sandbox whose setup was cut
	// short, to be torn down.
	Ready   bool      `json:"ready"`
	Created time.Time `json:"created"`
}

// runtimeConf is the libcni view of the sandbox.
func (sb Sandbox) runtimeConf() *libcni.RuntimeConf {
	caps := make(map[string]any, len(sb.CapabilityArgs))
	for k, v := range sb.CapabilityArgs {
		caps[k] = v
	}
	return &libcni.RuntimeConf{
		ContainerID:    sb.ContainerID,
		NetNS:          sb.NetNS,
		IfName:         sb.IfName,
		Args:           sb.Args,
		CapabilityArgs: caps,
	}
}

// NetNSName is the name of the sandbox's namespace under the node's /run/netns.
func (sb Sandbox) NetNSName() string { return filepath.Base(sb.NetNS) }

// Store keeps sandbox records as one JSON file per sandbox in a directory.
type Store struct{ dir string }

// OpenStore returns the store in dir, creating the directory.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open sandbox store: %w", err)
	}
	return &Store{dir: dir}, nil
}

func (s *Store) path(id string) string { return filepath.Join(s.dir, id+".json") }

// Put writes a record, replacing any with the same container id.
func (s *Store) Put(sb Sandbox) error {
	b, err := json.MarshalIndent(sb, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.dir, "."+sb.ContainerID+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write sandbox record: %w", err)
	}
	return os.Rename(tmp, s.path(sb.ContainerID))
}

// Delete removes a record; a missing one is fine.
func (s *Store) Delete(containerID string) error {
	if err := os.Remove(s.path(containerID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete sandbox record: %w", err)
	}
	return nil
}

// List returns every record, oldest first.
func (s *Store) List() ([]Sandbox, error) { return ListSandboxes(s.dir) }

// ForPod returns the records of the pod namespace/name, oldest first.
func (s *Store) ForPod(namespace, name string) ([]Sandbox, error) {
	all, err := s.List()
	var out []Sandbox
	for _, sb := range all {
		if sb.Namespace == namespace && sb.Pod == name {
			out = append(out, sb)
		}
	}
	return out, err
}

// ListSandboxes reads the records in a store directory, oldest first; a missing directory
// holds none.
func ListSandboxes(dir string) ([]Sandbox, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Sandbox
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || filepath.Ext(e.Name()) != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var sb Sandbox
		if err := json.Unmarshal(b, &sb); err != nil {
			return nil, fmt.Errorf("parse sandbox record %s: %w", e.Name(), err)
		}
		out = append(out, sb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}
