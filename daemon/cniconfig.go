package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/loom-cni/loom/cniserver"
)

// CNIConfigVersion is the CNI spec version of the configuration loomd writes. Runtimes that
// speak an older version get results converted by the cni library.
const CNIConfigVersion = "1.1.0"

// cniConfig renders the conflist the runtime uses to call loom.
func cniConfig(c Config) ([]byte, error) {
	plugin := cniserver.PluginConf{
		PluginConf: types.PluginConf{
			Type: "loom",
			// kubelet's runtimeConfig reaches loom, which hands it to the default network only.
			Capabilities: map[string]bool{"portMappings": true, "bandwidth": true, "io.kubernetes.cri.pod-annotations": true},
		},
		Socket:    c.Socket,
		LedgerDir: c.LedgerDir,
		CacheDir:  c.CNICacheDir,
		BinDir:    c.CNIBinDir,
	}
	return json.MarshalIndent(map[string]any{
		"cniVersion": CNIConfigVersion,
		"name":       "loom",
		"plugins":    []any{plugin},
	}, "", "  ")
}

// WriteCNIConfig writes the conflist atomically into the CNI configuration directory. Call it
// only once loomd is ready: the runtime treats the file's existence as the node's network
// being ready.
func WriteCNIConfig(c Config) error {
	b, err := cniConfig(c)
	if err != nil {
		return fmt.Errorf("render CNI configuration: %w", err)
	}
	if err = os.MkdirAll(c.CNIConfDir, 0o755); err != nil {
		return fmt.Errorf("create CNI configuration dir: %w", err)
	}
	tmp, err := os.CreateTemp(c.CNIConfDir, ".loom-*.tmp")
	if err != nil {
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(c.CNIConfDir, c.CNIConfName)); err != nil {
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	return nil
}
