// Command loom is Loom's CNI plugin. It forwards every call to loomd over a unix socket and
// prints loomd's answer. When loomd is not running, DEL, CHECK and GC are performed here from
// the node's attachment ledger, so a pod can always be torn down; ADD and STATUS report that
// loomd is unavailable.
//
// It deliberately imports no Kubernetes client: the runtime starts it for every call, and it
// must start in a few milliseconds. It never logs to stdout, which belongs to the CNI result.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/loom-cni/loom/cniserver"
	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/exec"
)

// offlineLockWait bounds how long the binary waits for the ledger lock when loomd does not
// answer: a loomd that is starting holds the lock and will answer shortly.
const offlineLockWait = 30 * time.Second

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    func(a *skel.CmdArgs) error { return forward("ADD", a, true) },
		Check:  func(a *skel.CmdArgs) error { return forward("CHECK", a, false) },
		Del:    func(a *skel.CmdArgs) error { return forward("DEL", a, false) },
		GC:     func(a *skel.CmdArgs) error { return forward("GC", a, false) },
		Status: func(a *skel.CmdArgs) error { return forward("STATUS", a, false) },
	}, version.All, "loom: Kubernetes multi-network CNI (forwards to loomd)")
}

func forward(cmd string, a *skel.CmdArgs, printResult bool) error {
	conf, err := cniserver.ParsePluginConf(a.StdinData)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	req := &cniserver.Request{
		Command: cmd, ContainerID: a.ContainerID, Netns: a.Netns, Ifname: a.IfName,
		Args: a.Args, Path: a.Path, Config: a.StdinData,
	}
	ctx := context.Background()
	out, err := cniserver.NewClient(conf.Socket).Do(ctx, req)
	if errors.Is(err, cniserver.ErrUnavailable) {
		return offline(ctx, cmd, a, conf, err)
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

// offline serves a call without loomd, from the ledger alone.
func offline(ctx context.Context, cmd string, a *skel.CmdArgs, conf *cniserver.PluginConf, cause error) error {
	switch cmd {
	case "ADD":
		return types.NewError(types.ErrTryAgainLater, "loomd is not running on this node", cause.Error())
	case "STATUS":
		return types.NewError(cniserver.ErrPluginNotAvailable, "loomd is not running on this node", cause.Error())
	}
	if conf.LedgerDir == "" {
		return types.NewError(types.ErrTryAgainLater, "loomd is not running and the configuration names no ledger", cause.Error())
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ledger, err := delegate.OpenLedger(conf.LedgerDir, log)
	if err != nil {
		return err
	}
	unlock, err := ledger.Lock(offlineLockWait)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "loomd does not answer but holds the ledger", err.Error())
	}
	defer unlock()

	binDirs := filepath.SplitList(a.Path)
	if conf.BinDir != "" {
		binDirs = []string{conf.BinDir}
	}
	orch := delegate.NewOrchestrator(ledger, map[string]delegate.Attachment{
		delegate.KindCNI: exec.New(binDirs, conf.CacheDir, nil),
	}, log)
	id := delegate.ContainerID(a.ContainerID)
	switch cmd {
	case "DEL":
		return orch.Del(ctx, id, a.Netns, nil)
	case "CHECK":
		return orch.Check(ctx, id, a.Netns)
	case "GC":
		valid, err := delegate.ValidContainers(a.StdinData)
		if err != nil {
			return err
		}
		return orch.GC(ctx, valid, nil)
	}
	return types.NewError(types.ErrInvalidEnvironmentVariables, "unknown CNI command "+cmd, "")
}
