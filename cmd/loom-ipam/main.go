// Command loom-ipam is Loom's IPAM plugin for secondary networks: a NetworkAttachmentDefinition
// names it in its "ipam" section ({"type": "loom-ipam", "range": "192.168.50.0/24"}) and gets
// addresses from a cluster-wide pool carved into per-node blocks. It forwards every call to
// loomd over its unix socket.
//
// When loomd is down, DEL succeeds without releasing: loomd releases addresses of containers
// its ledger no longer names when it comes back, so a pod can always be torn down.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/loom-cni/loom/cniserver"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    func(a *skel.CmdArgs) error { return forward("ADD", a, true) },
		Check:  func(a *skel.CmdArgs) error { return forward("CHECK", a, false) },
		Del:    func(a *skel.CmdArgs) error { return forward("DEL", a, false) },
		GC:     func(a *skel.CmdArgs) error { return forward("GC", a, false) },
		Status: func(a *skel.CmdArgs) error { return forward("STATUS", a, false) },
	}, version.All, "loom-ipam: cluster-wide IPAM with per-node blocks (forwards to loomd)")
}

// socketOf reads the optional "socket" of the ipam section; loomd's default otherwise.
func socketOf(stdin []byte) string {
	var conf struct {
		IPAM struct {
			Socket string `json:"socket"`
		} `json:"ipam"`
	}
	if json.Unmarshal(stdin, &conf) == nil && conf.IPAM.Socket != "" {
		return conf.IPAM.Socket
	}
	return cniserver.DefaultSocket
}

func forward(cmd string, a *skel.CmdArgs, printResult bool) error {
	req := &cniserver.Request{
		Plugin: cniserver.PluginIPAM, Command: cmd, ContainerID: a.ContainerID, Netns: a.Netns,
		Ifname: a.IfName, Args: a.Args, Path: a.Path, Config: a.StdinData,
	}
	out, err := cniserver.NewClient(socketOf(a.StdinData)).Do(context.Background(), req)
	if errors.Is(err, cniserver.ErrUnavailable) {
		switch cmd {
		case "DEL", "GC":
			fmt.Fprintln(os.Stderr, "loom-ipam: loomd is not running; it releases the address when it is back")
			return nil
		case "STATUS":
			return types.NewError(cniserver.ErrPluginNotAvailable, "loomd is not running on this node", err.Error())
		default:
			return types.NewError(types.ErrTryAgainLater, "loomd is not running on this node", err.Error())
		}
	}
	if err != nil {
		return err
	}
	if printResult {
		if _, err := os.Stdout.Write(out); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
	}
	return nil
}
