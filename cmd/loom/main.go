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
	"github.com/loom-cni/loom/fabric/podnet"
)

// loomdWait bounds how long DEL, CHECK and GC wait when loomd does not answer but holds the
// ledger (it is starting and will answer shortly); retryEvery is how often they look again.
const (
	loomdWait  = 30 * time.Second
	retryEvery = 100 * time.Millisecond
)

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
	out, err := ask(context.Background(), cmd, a, conf, req)
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

// ask sends the call to loomd. When loomd does not answer, ADD and STATUS fail at once (the
// runtime retries ADD); DEL, CHECK and GC are served here from the ledger as soon as its lock
// is free, which it is whenever no loomd runs. A loomd that holds the lock is starting: it is
// asked again until it answers or loomdWait runs out.
func ask(ctx context.Context, cmd string, a *skel.CmdArgs, conf *cniserver.PluginConf, req *cniserver.Request) ([]byte, error) {
	client := cniserver.NewClient(conf.Socket)
	deadline := time.Now().Add(loomdWait)
	var ledger *delegate.Ledger
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for {
		out, err := client.Do(ctx, req)
		if !errors.Is(err, cniserver.ErrUnavailable) {
			return out, err
		}
		switch {
		case cmd == "ADD":
			return nil, types.NewError(types.ErrTryAgainLater, "loomd is not running on this node", err.Error())
		case cmd == "STATUS":
			return nil, types.NewError(cniserver.ErrPluginNotAvailable, "loomd is not running on this node", err.Error())
		case conf.LedgerDir == "":
			return nil, types.NewError(types.ErrTryAgainLater, "loomd is not running and the configuration names no ledger", err.Error())
		}
		if ledger == nil {
			var lerr error
			if ledger, lerr = delegate.OpenLedger(conf.LedgerDir, log); lerr != nil {
				return nil, lerr
			}
		}
		if unlock, lerr := ledger.Lock(0); lerr == nil {
			defer unlock()
			return nil, offline(ctx, cmd, a, conf, ledger, log)
		}
		if time.Now().After(deadline) {
			return nil, types.NewError(types.ErrTryAgainLater, "loomd holds the ledger but does not answer", err.Error())
		}
		time.Sleep(retryEvery)
	}
}

// offline serves DEL, CHECK or GC without loomd, from the ledger alone. The caller holds the
// ledger's lock.
func offline(ctx context.Context, cmd string, a *skel.CmdArgs, conf *cniserver.PluginConf, ledger *delegate.Ledger, log *slog.Logger) error {
	binDirs := filepath.SplitList(a.Path)
	if conf.BinDir != "" {
		binDirs = []string{conf.BinDir}
	}
	orch := delegate.NewOrchestrator(ledger, map[string]delegate.Attachment{
		delegate.KindCNI: exec.New(binDirs, conf.CacheDir, nil),
		podnet.Kind:      primaryOffline{},
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

// primaryOffline serves the primary network's attachments while loomd is down: it removes and
// checks interfaces. The address stays allocated until loomd is back and releases what the
// ledger no longer names.
type primaryOffline struct{}

func (primaryOffline) Add(context.Context, delegate.Call) (types.Result, error) {
	return nil, errors.New("loomd is not running")
}

func (primaryOffline) Check(_ context.Context, c delegate.Call, prev types.Result) error {
	addr, err := podnet.AddressOf(prev)
	if err != nil {
		return err
	}
	return podnet.Check(c.Netns, string(c.ContainerID), c.Ifname, addr)
}

func (primaryOffline) Del(_ context.Context, c delegate.Call, _ types.Result) error {
	return podnet.Del(string(c.ContainerID), c.Ifname)
}
