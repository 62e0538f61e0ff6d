// Package deployments owns Loom's Kubernetes manifests: a kustomize base (base/: the CRDs of
// crds/, loomd's DaemonSet, loom-controller's Deployment and Service, their RBAC and the
// ConfigMap loomd-config) and an overlay per primary network mode (overlays/<mode>), which
// `kubectl apply -k deployments/overlays/<mode>` installs.
//
// The package embeds loomd's configuration files so that a program running loomd outside
// Kubernetes, such as the simulated cluster, can start it from the content the ConfigMap
// holds in a real cluster (LoomdConfig). The tests next to it render every overlay with
// kubectl, check the manifests against what the code needs, apply them to a real API server
// and run loomd and loom-controller with nothing but the permissions the manifests grant.
package deployments

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
)

// files holds the base's loomd configuration and every overlay (its kustomization.yaml and,
// when it replaces the base's, its config/loomd.yaml).
//
//go:embed base/config/loomd.yaml overlays
var files embed.FS

const (
	baseConfig    = "base/config/loomd.yaml"
	overlayConfig = "config/loomd.yaml" // in an overlay's directory
)

// Modes returns the primary network modes that have an overlay, sorted: the values
// LoomdConfig accepts.
func Modes() []string {
	// The embed directive fails the build when overlays is missing: reading it cannot fail.
	entries, _ := fs.ReadDir(files, "overlays")
	var modes []string
	for _, e := range entries {
		if e.IsDir() {
			modes = append(modes, e.Name())
		}
	}
	slices.Sort(modes)
	return modes
}

// LoomdConfig returns loomd.yaml as the ConfigMap loomd-config holds it once
// deployments/overlays/<mode> is rendered: the overlay's config/loomd.yaml when it has one
// (its configMapGenerator then replaces the base's key with it), else the base's.
//
// The content names no node and no kubeconfig: in a pod loomd takes them from $NODE_NAME and
// its ServiceAccount. A program running loomd elsewhere adds nodeName and kubeconfig, which
// are top-level fields the content never sets, so appending them as YAML lines is enough.
func LoomdConfig(mode string) ([]byte, error) {
	if !slices.Contains(Modes(), mode) {
		return nil, fmt.Errorf("loomd configuration for mode %q: no overlay deployments/overlays/%s (modes: %v)", mode, mode, Modes())
	}
	b, err := files.ReadFile(path.Join("overlays", mode, overlayConfig))
	if errors.Is(err, fs.ErrNotExist) {
		b, err = files.ReadFile(baseConfig)
	}
	if err != nil {
		return nil, fmt.Errorf("loomd configuration for mode %s: %w", mode, err)
	}
	return b, nil
}
