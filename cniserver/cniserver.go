// Package cniserver carries CNI calls from the loom binary to loomd over a unix socket: the
// wire format, the client the binary uses and the HTTP server loomd runs. It also owns the
// configuration loomd writes for the binary (PluginConf). It stays free of client-go so the
// binary starts in a few milliseconds.
package cniserver

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// Request is one CNI invocation of the loom binary, as the runtime made it.
type Request struct {
	// Plugin names the plugin binary that forwards the call: "" for loom, PluginIPAM for
	// loom-ipam.
	Plugin      string `json:"plugin,omitempty"`
	Command     string `json:"command"`
	ContainerID string `json:"containerID,omitempty"`
	Netns       string `json:"netns,omitempty"`
	Ifname      string `json:"ifname,omitempty"`
	// Args is CNI_ARGS, e.g. "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;...".
	Args string `json:"args,omitempty"`
	// Path is CNI_PATH.
	Path string `json:"path,omitempty"`
	// Config is the network configuration the runtime passed on stdin. It can carry secrets:
	// never log it.
	Config []byte `json:"config"`
}

// response is what the server sends back: the result printed for the runtime, or a CNI error.
type response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *types.Error    `json:"error,omitempty"`
}

// PluginIPAM is the Plugin of calls from Loom's IPAM plugin.
const PluginIPAM = "loom-ipam"

// DefaultSocket is where loomd listens unless configured otherwise.
const DefaultSocket = "/run/loom/loom.sock"

// PluginConf is the loom plugin's entry in the conflist loomd writes: where to find loomd,
// and where the ledger lives for DEL when loomd is down.
type PluginConf struct {
	types.PluginConf
	// Socket is loomd's unix socket.
	Socket string `json:"socket,omitempty"`
	// LedgerDir is the node's attachment ledger.
	LedgerDir string `json:"ledgerDir,omitempty"`
	// CacheDir is the libcni cache the delegates' results are kept in.
	CacheDir string `json:"cacheDir,omitempty"`
	// BinDir holds the delegate plugins; CNI_PATH is used when it is empty.
	BinDir string `json:"binDir,omitempty"`
}

// ParsePluginConf parses the loom plugin's configuration from stdin data.
func ParsePluginConf(b []byte) (*PluginConf, error) {
	c := &PluginConf{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("parse loom configuration: %w", err)
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	return c, nil
}

// ErrPluginNotAvailable is the CNI 1.1 error code for STATUS: the plugin cannot serve ADDs.
// The cni library does not define it.
const ErrPluginNotAvailable uint = 50
