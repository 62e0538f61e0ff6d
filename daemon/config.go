package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/sriov"
)

// BuiltinNetwork is the name of Loom's own primary network, as network-status shows it.
const BuiltinNetwork = "loom"

// Config is loomd's configuration, read once from a YAML (or JSON) file and immutable after
// Validate. Zero fields take the defaults a node in a real cluster uses.
type Config struct {
	// NodeName is this node's Kubernetes Node name; default $NODE_NAME, else the hostname.
	NodeName string `json:"nodeName,omitempty"`
	// Kubeconfig is the path of a kubeconfig file; empty means in-cluster configuration.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Socket is the unix socket the loom CNI binary talks to.
	Socket string `json:"socket,omitempty"`
	// CNIConfDir is where loomd writes CNIConfName once it is ready.
	CNIConfDir  string `json:"cniConfDir,omitempty"`
	CNIConfName string `json:"cniConfName,omitempty"`
	// CNIBinDir holds the loom binary and the delegate plugins.
	CNIBinDir string `json:"cniBinDir,omitempty"`
	// CNICacheDir is libcni's cache of delegate results. It is Loom's own, apart from the
	// runtime's /var/lib/cni, so a delegate network can never share a cache entry with the
	// runtime's entry for Loom itself.
	CNICacheDir string `json:"cniCacheDir,omitempty"`
	// LedgerDir holds the node's attachment ledger.
	LedgerDir string `json:"ledgerDir,omitempty"`
	// NetConfDir holds CNI configuration files that networks may name when no
	// NetworkAttachmentDefinition carries a spec.config.
	NetConfDir string `json:"netConfDir,omitempty"`
	// DefaultNetwork is the cluster default network: a NetworkAttachmentDefinition in
	// SystemNamespace ("name" or "namespace/name"), else a file in NetConfDir, else
	// BuiltinNetwork when PrimaryNetwork is set. Default: BuiltinNetwork when PrimaryNetwork is
	// set; required otherwise.
	DefaultNetwork string `json:"defaultNetwork,omitempty"`
	// PrimaryNetwork configures Loom's own primary network (vxlan, bgp or vxlan-crosssubnet).
	// Without it, the default network must be another CNI network.
	PrimaryNetwork *fabric.Config `json:"primaryNetwork,omitempty"`
	// SystemNamespace is where DefaultNetwork and per-pod default-network overrides without a
	// namespace are looked up.
	SystemNamespace string `json:"systemNamespace,omitempty"`
	// NamespaceIsolation lets a pod use NetworkAttachmentDefinitions only from its own
	// namespace and from GlobalNamespaces.
	NamespaceIsolation bool     `json:"namespaceIsolation,omitempty"`
	GlobalNamespaces   []string `json:"globalNamespaces,omitempty"`
	// Policy configures the policy engine, which enforces tenants, NetworkPolicies and
	// MultiNetworkPolicies. It runs when PrimaryNetwork is set, unless disabled here.
	Policy PolicyConfig `json:"policy,omitempty"`
	// SRIOV configures SR-IOV: VF discovery, the device plugin of each pool, and the
	// loom-sriov attachment.
	SRIOV SRIOVConfig `json:"sriov,omitempty"`
	// HealthAddress serves /healthz and /readyz.
	HealthAddress string `json:"healthAddress,omitempty"`
	// PodWait bounds how long an ADD waits for the pod to reach the informer cache before
	// loomd asks the API server directly.
	PodWait Duration `json:"podWait,omitempty"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"logLevel,omitempty"`
}

// PolicyConfig configures the policy engine.
type PolicyConfig struct {
	// Disabled turns the engine off: no tenancy checks at ADD, no rules.
	Disabled bool `json:"disabled,omitempty"`
	// Nft is the nft binary; default "nft" from $PATH.
	Nft string `json:"nft,omitempty"`
	// VerifyInterval is how often the engine checks that the kernel still holds its rules,
	// rewriting what someone changed; default 30s.
	VerifyInterval Duration `json:"verifyInterval,omitempty"`
}

// SRIOVConfig configures SR-IOV. The loom-sriov attachment works on any VF the kubelet
// allocates, also through another device plugin; Pools turn on Loom's own device plugin.
type SRIOVConfig struct {
	// Pools are the resource pools Loom's device plugin advertises, in the format of
	// sriov.ParsePools' "pools" list. None: loomd runs no device plugin.
	Pools json.RawMessage `json:"pools,omitempty"`
	// SysfsRoot is the directory holding the sys/ tree VFs are discovered in; default "/".
	SysfsRoot string `json:"sysfsRoot,omitempty"`
	// DevicePluginDir is the kubelet's device plugin directory.
	DevicePluginDir string `json:"devicePluginDir,omitempty"`
	// PodResourcesSocket is the kubelet's PodResources API socket, where ADD reads the
	// devices allocated to a pod.
	PodResourcesSocket string `json:"podResourcesSocket,omitempty"`
	// DevInfoDir is where NPWG device-info files are written.
	DevInfoDir string `json:"devInfoDir,omitempty"`
	// StateDir holds a claim per VF in use, with the VF's state to restore at DEL.
	StateDir string `json:"stateDir,omitempty"`
	// RescanInterval is how often sysfs is read again for changed VFs; default 200ms.
	RescanInterval Duration `json:"rescanInterval,omitempty"`
	// PFConfig is how VF settings are written to their PF: "netlink" (the default), or
	// "record:<file>", which records them in a file instead, for nodes without SR-IOV
	// hardware such as the simulated cluster's.
	PFConfig string `json:"pfConfig,omitempty"`
}

// ParsedPools returns the SR-IOV pools, parsed.
func (c SRIOVConfig) ParsedPools() ([]sriov.PoolConfig, error) {
	if len(c.Pools) == 0 {
		return nil, nil
	}
	return sriov.ParsePools([]byte(`{"pools":` + string(c.Pools) + `}`))
}

// RecordFile returns the file of a "record:<file>" PFConfig, "" for netlink.
func (c SRIOVConfig) RecordFile() string {
	f, _ := strings.CutPrefix(c.PFConfig, "record:")
	if f == c.PFConfig {
		return ""
	}
	return f
}

// PolicyEnabled reports whether loomd runs the policy engine.
func (c Config) PolicyEnabled() bool { return c.PrimaryNetwork != nil && !c.Policy.Disabled }

// Duration is a time.Duration written as "5s" in configuration files.
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := yaml.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"5s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: use a form such as \"5s\" or \"1m\"", s)
	}
	d.Duration = v
	return nil
}

// LoadConfig reads, defaults and validates a configuration file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig parses, defaults and validates configuration file content.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return Config{}, fmt.Errorf("parse config: %w", err)
	}
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c Config) withDefaults() Config {
	if c.NodeName == "" {
		c.NodeName = os.Getenv("NODE_NAME")
	}
	if c.NodeName == "" {
		c.NodeName, _ = os.Hostname()
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.Socket, "/run/loom/loom.sock")
	def(&c.Policy.Nft, "nft")
	if c.Policy.VerifyInterval.Duration == 0 {
		c.Policy.VerifyInterval.Duration = 30 * time.Second
	}
	def(&c.CNIConfDir, "/etc/cni/net.d")
	def(&c.CNIConfName, "00-loom.conflist")
	def(&c.CNIBinDir, "/opt/cni/bin")
	def(&c.CNICacheDir, "/var/lib/loom/cni")
	def(&c.LedgerDir, "/var/lib/loom/ledger")
	def(&c.NetConfDir, "/etc/loom/net.d")
	def(&c.SystemNamespace, "kube-system")
	def(&c.HealthAddress, "127.0.0.1:9465")
	def(&c.LogLevel, "info")
	if c.PrimaryNetwork != nil {
		def(&c.DefaultNetwork, BuiltinNetwork)
	}
	if c.PodWait.Duration == 0 {
		c.PodWait.Duration = 10 * time.Second
	}
	def(&c.SRIOV.SysfsRoot, "/")
	def(&c.SRIOV.DevicePluginDir, "/var/lib/kubelet/device-plugins")
	def(&c.SRIOV.PodResourcesSocket, "/var/lib/kubelet/pod-resources/kubelet.sock")
	def(&c.SRIOV.DevInfoDir, "/var/run/k8s.cni.cncf.io/devinfo")
	def(&c.SRIOV.StateDir, "/var/lib/loom/sriov")
	def(&c.SRIOV.PFConfig, "netlink")
	if c.SRIOV.RescanInterval.Duration == 0 {
		c.SRIOV.RescanInterval.Duration = 200 * time.Millisecond
	}
	return c
}

// Validate reports every problem in c, not just the first.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("nodeName: not set and neither NODE_NAME nor the hostname gives one"))
	}
	if c.DefaultNetwork == "" {
		errs = append(errs, errors.New("defaultNetwork: required without primaryNetwork: configure Loom's primary network, or name the NetworkAttachmentDefinition or configuration file of the cluster default network"))
	}
	if c.PrimaryNetwork != nil {
		if _, err := c.PrimaryNetwork.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("primaryNetwork: %w", err))
		}
	}
	for name, p := range map[string]string{
		"socket": c.Socket, "cniConfDir": c.CNIConfDir, "cniBinDir": c.CNIBinDir,
		"cniCacheDir": c.CNICacheDir, "ledgerDir": c.LedgerDir, "netConfDir": c.NetConfDir,
		"sriov.sysfsRoot": c.SRIOV.SysfsRoot, "sriov.devicePluginDir": c.SRIOV.DevicePluginDir,
		"sriov.podResourcesSocket": c.SRIOV.PodResourcesSocket, "sriov.devInfoDir": c.SRIOV.DevInfoDir,
		"sriov.stateDir": c.SRIOV.StateDir,
	} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s: %q is not an absolute path", name, p))
		}
	}
	if filepath.Base(c.CNIConfName) != c.CNIConfName || filepath.Ext(c.CNIConfName) != ".conflist" {
		errs = append(errs, fmt.Errorf("cniConfName: %q must be a file name ending in .conflist", c.CNIConfName))
	}
	if _, _, err := net.SplitHostPort(c.HealthAddress); err != nil {
		errs = append(errs, fmt.Errorf("healthAddress: %w", err))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("logLevel: %q is not one of debug, info, warn, error", c.LogLevel))
	}
	if c.PodWait.Duration < 0 {
		errs = append(errs, fmt.Errorf("podWait: %s is negative", c.PodWait))
	}
	if _, err := c.SRIOV.ParsedPools(); err != nil {
		errs = append(errs, fmt.Errorf("sriov.pools: %w", err))
	}
	if c.SRIOV.RescanInterval.Duration < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("sriov.rescanInterval: %s is below 10ms", c.SRIOV.RescanInterval))
	}
	if f := c.SRIOV.RecordFile(); c.SRIOV.PFConfig != "netlink" && !filepath.IsAbs(f) {
		errs = append(errs, fmt.Errorf(`sriov.pfConfig: %q is neither "netlink" nor "record:" and an absolute path`, c.SRIOV.PFConfig))
	}
	return errors.Join(errs...)
}
