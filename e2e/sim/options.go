package sim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Options says how to build a cluster. OptionsFromEnv fills in the tool paths the Makefile
// exports; Up fills in the remaining defaults.
type Options struct {
	// Dir holds the cluster's state, certificates and logs; required. It must not lie under a
	// path that nodes mount over (/run, /etc/cni, /opt/cni, /var/lib/cni, /var/lib/loom,
	// /etc/loom).
	Dir string `json:"dir"`
	// Nodes is the number of nodes, 1 to 50; default 3. The first half (rounded up) sit on
	// underlay subnet A with the API server, the rest on subnet B behind the router.
	Nodes int `json:"nodes"`
	// Mode is the cluster's primary network; default ModeVXLAN.
	Mode Mode `json:"mode"`
	// SRIOV gives every node a simulated SR-IOV NIC, which loomd discovers and advertises
	// to the node's runtime as the pools SRIOVPoolA, SRIOVPoolB and SRIOVPoolDPDK (see
	// sriov.go).
	SRIOV bool `json:"sriov,omitempty"`

	// KubeAPIServer and Etcd are the control plane binaries.
	KubeAPIServer string `json:"kubeAPIServer"`
	Etcd          string `json:"etcd"`
	// Kubectl is used only by Cluster.Kubectl.
	Kubectl string `json:"kubectl,omitempty"`
	// CNIPluginsDir holds the reference CNI plugins; each is symlinked into every node's
	// /opt/cni/bin.
	CNIPluginsDir string `json:"cniPluginsDir"`
	// BinDir holds loom, loomd and loomctl (make build). BinDir/loom is symlinked into every
	// node's /opt/cni/bin when it exists.
	BinDir string `json:"binDir"`
	// Loomd is the command run as loomd in each node, followed by
	// "--config /etc/loom/loomd.yaml"; default BinDir/loomd. Tests put a stand-in here.
	Loomd []string `json:"loomd"`
	// LoomdWithoutHealth says Loomd serves no /readyz (a stand-in): it counts as ready as
	// soon as a CNI configuration exists in the node's /etc/cni/net.d.
	LoomdWithoutHealth bool `json:"loomdWithoutHealth,omitempty"`
	// LoomdConfig holds extra fields of loomd's configuration file (daemon.Config's JSON
	// names, e.g. "namespaceIsolation": true); they override the sim's own.
	LoomdConfig map[string]any `json:"loomdConfig,omitempty"`
	// Controller is loom-controller, run in the root namespace once the CRDs are
	// established; default BinDir/loom-controller when that file exists, else none.
	Controller string `json:"controller,omitempty"`
	// Bird and Birdc are BIRD 2's daemon and client, which play the top-of-rack route
	// reflector in ModeBGP; default from $PATH, then /usr/sbin.
	Bird  string `json:"bird,omitempty"`
	Birdc string `json:"birdc,omitempty"`
	// SupervisorCommand starts a node supervisor (RunNode) once it is given
	// "--dir DIR --node NAME"; default BinDir/loomctl sim node. Tests re-execute their own
	// binary (see ReexecArg).
	SupervisorCommand []string `json:"supervisorCommand"`
	// GCInterval is how often each node's runtime calls CNI GC; default one minute.
	GCInterval time.Duration `json:"gcInterval"`
	// Ephemeral ties the cluster's life to the process that called Up: once that process is
	// gone, the next Up reaps the cluster even if its processes still run. Tests set it so
	// that a killed test binary leaves nothing behind for long.
	Ephemeral bool `json:"ephemeral,omitempty"`

	// RunDir holds slot reservations, pid files and mount namespace pins; default
	// /run/loom-sim.
	RunDir string `json:"runDir"`
	// IP, Nsenter and Unshare are the iproute2 and util-linux programs; default from $PATH.
	IP      string `json:"ip"`
	Nsenter string `json:"nsenter"`
	Unshare string `json:"unshare"`

	// Progress receives one line per step of Up and Down; nil discards them.
	Progress io.Writer `json:"-"`
}

// Mode is the cluster's primary network: how pods on different nodes reach each other.
type Mode string

// The modes. In Loom's own (every one but ModeBridge) loomd runs the primary network from
// the primaryNetwork section of its configuration, and the sim routes no pod addresses.
const (
	// ModeVXLAN: a VXLAN overlay between all nodes.
	ModeVXLAN Mode = "vxlan"
	// ModeBGP: nodes announce their pod addresses to the router, a BIRD route reflector,
	// and route them without encapsulation.
	ModeBGP Mode = "bgp"
	// ModeVXLANCrossSubnet: direct routes within an underlay subnet, VXLAN across subnets.
	ModeVXLANCrossSubnet Mode = "vxlan-crosssubnet"
	// ModeBridge: the reference bridge plugin (network loom-default, host-local addresses
	// from each node's pod CIDR) is the default network loomd delegates to; the sim routes
	// every pod CIDR statically, across subnets through the router.
	ModeBridge Mode = "bridge"
)

// Modes lists the modes, the default first.
func Modes() []Mode { return []Mode{ModeVXLAN, ModeBGP, ModeVXLANCrossSubnet, ModeBridge} }

// loomNetwork says whether loomd runs the primary network itself.
func (m Mode) loomNetwork() bool { return m != ModeBridge }

// OptionsFromEnv returns Options with the tool paths taken from the variables the Makefile
// exports (LOOM_KUBE_APISERVER, LOOM_ETCD, LOOM_KUBECTL, LOOM_CNI_PLUGINS_DIR,
// LOOM_BIN_DIR, LOOM_BIRD, LOOM_BIRDC), falling back to $PATH (and /usr/sbin, where Debian
// puts BIRD) for the binaries, and the mode from LOOM_SIM_MODE, so that a suite that does
// not choose one runs in each: LOOM_SIM_MODE=bgp make test.
func OptionsFromEnv(getenv func(string) string) Options {
	pick := func(env, name string) string {
		if v := getenv(env); v != "" {
			return v
		}
		return lookPath(name)
	}
	return Options{
		KubeAPIServer: pick("LOOM_KUBE_APISERVER", "kube-apiserver"),
		Etcd:          pick("LOOM_ETCD", "etcd"),
		Kubectl:       getenv("LOOM_KUBECTL"),
		CNIPluginsDir: getenv("LOOM_CNI_PLUGINS_DIR"),
		BinDir:        getenv("LOOM_BIN_DIR"),
		Mode:          Mode(getenv("LOOM_SIM_MODE")),
		Bird:          pick("LOOM_BIRD", "bird"),
		Birdc:         pick("LOOM_BIRDC", "birdc"),
	}
}

// lookPath finds a program in $PATH, then in /usr/sbin (which a non-root $PATH often lacks),
// and returns "" when it is in neither.
func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p, err := exec.LookPath(filepath.Join("/usr/sbin", name)); err == nil {
		return p
	}
	return ""
}

// nodeMountPaths are the node-local paths: in a node each is a bind mount of
// DIR/nodes/NAME/root/<path>.
func nodeMountPaths() []string {
	return []string{"/run", "/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni", "/var/lib/loom", "/etc/loom", "/var/lib/kubelet"}
}

// withDefaults fills in defaults and checks that everything Up needs is there.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("dir: required"))
	} else {
		abs, err := filepath.Abs(o.Dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("dir: %w", err))
		}
		o.Dir = filepath.Clean(abs)
		for _, p := range append(nodeMountPaths(), "/etc/cni", "/opt/cni") {
			if o.Dir == p || strings.HasPrefix(o.Dir, p+"/") {
				errs = append(errs, fmt.Errorf("dir: %s lies under %s, which nodes mount over: choose another directory", o.Dir, p))
			}
		}
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Nodes < 1 || o.Nodes > 50 {
		errs = append(errs, fmt.Errorf("nodes: %d is not between 1 and 50", o.Nodes))
	}
	if o.Mode == "" {
		o.Mode = ModeVXLAN
	}
	if !slices.Contains(Modes(), o.Mode) {
		errs = append(errs, fmt.Errorf("mode: %q is none of %v", o.Mode, Modes()))
	}
	if len(o.Loomd) == 0 && o.BinDir != "" {
		o.Loomd = []string{filepath.Join(o.BinDir, "loomd")}
	}
	if len(o.SupervisorCommand) == 0 && o.BinDir != "" {
		o.SupervisorCommand = []string{filepath.Join(o.BinDir, "loomctl"), "sim", "node"}
	}
	if o.Controller == "" && o.BinDir != "" {
		if _, err := os.Stat(filepath.Join(o.BinDir, "loom-controller")); err == nil {
			o.Controller = filepath.Join(o.BinDir, "loom-controller")
		}
	}
	if o.Controller != "" {
		errs = append(errs, checkExecutable("controller", o.Controller))
	}
	if o.Mode == ModeBGP {
		for _, t := range []struct {
			p    *string
			name string
		}{{&o.Bird, "bird"}, {&o.Birdc, "birdc"}} {
			if *t.p == "" {
				*t.p = lookPath(t.name)
			}
			if *t.p == "" {
				errs = append(errs, fmt.Errorf("%s (LOOM_%s): not found in $PATH or /usr/sbin: mode bgp needs BIRD 2: run hack/tools.sh debs", t.name, strings.ToUpper(t.name)))
			} else {
				errs = append(errs, checkExecutable(t.name, *t.p))
			}
		}
	}
	if o.GCInterval == 0 {
		o.GCInterval = time.Minute
	}
	if o.RunDir == "" {
		o.RunDir = "/run/loom-sim"
	}
	for _, t := range []struct {
		p    *string
		name string
	}{{&o.IP, "ip"}, {&o.Nsenter, "nsenter"}, {&o.Unshare, "unshare"}} {
		if *t.p == "" {
			p, err := exec.LookPath(t.name)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: not found in $PATH: install iproute2 and util-linux", t.name))
			}
			*t.p = p
		}
	}
	errs = append(errs, checkExecutable("kubeAPIServer (LOOM_KUBE_APISERVER)", o.KubeAPIServer),
		checkExecutable("etcd (LOOM_ETCD)", o.Etcd))
	if len(o.Loomd) == 0 {
		errs = append(errs, errors.New("loomd: not set and no binDir (LOOM_BIN_DIR) to find it in"))
	} else {
		errs = append(errs, checkExecutable("loomd", o.Loomd[0]))
	}
	if len(o.SupervisorCommand) == 0 {
		errs = append(errs, errors.New("supervisorCommand: not set and no binDir (LOOM_BIN_DIR) to find loomctl in"))
	} else {
		errs = append(errs, checkExecutable("supervisorCommand", o.SupervisorCommand[0]))
	}
	if fi, err := os.Stat(o.CNIPluginsDir); err != nil || !fi.IsDir() {
		errs = append(errs, fmt.Errorf("cniPluginsDir (LOOM_CNI_PLUGINS_DIR): %q is not a directory: run make tools", o.CNIPluginsDir))
	}
	return o, errors.Join(errs...)
}

func checkExecutable(what, path string) error {
	if path == "" {
		return fmt.Errorf("%s: not set: run make tools and use the Makefile's variables", what)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s: %s is not an executable file", what, path)
	}
	return nil
}
