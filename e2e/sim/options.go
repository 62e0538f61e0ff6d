package sim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
	// Nodes is the number of nodes, 1 to 50; default 2.
	Nodes int `json:"nodes"`

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

// OptionsFromEnv returns Options with the tool paths taken from the variables the Makefile
// exports (LOOM_KUBE_APISERVER, LOOM_ETCD, LOOM_KUBECTL, LOOM_CNI_PLUGINS_DIR,
// LOOM_BIN_DIR), falling back to $PATH for the binaries.
func OptionsFromEnv(getenv func(string) string) Options {
	pick := func(env, name string) string {
		if v := getenv(env); v != "" {
			return v
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		return ""
	}
	return Options{
		KubeAPIServer: pick("LOOM_KUBE_APISERVER", "kube-apiserver"),
		Etcd:          pick("LOOM_ETCD", "etcd"),
		Kubectl:       getenv("LOOM_KUBECTL"),
		CNIPluginsDir: getenv("LOOM_CNI_PLUGINS_DIR"),
		BinDir:        getenv("LOOM_BIN_DIR"),
	}
}

// nodeMountPaths are the node-local paths: in a node each is a bind mount of
// DIR/nodes/NAME/root/<path>.
func nodeMountPaths() []string {
	return []string{"/run", "/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni", "/var/lib/loom", "/etc/loom"}
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
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > 50 {
		errs = append(errs, fmt.Errorf("nodes: %d is not between 1 and 50", o.Nodes))
	}
	if len(o.Loomd) == 0 && o.BinDir != "" {
		o.Loomd = []string{filepath.Join(o.BinDir, "loomd")}
	}
	if len(o.SupervisorCommand) == 0 && o.BinDir != "" {
		o.SupervisorCommand = []string{filepath.Join(o.BinDir, "loomctl"), "sim", "node"}
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
