package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/loom-cni/loom/daemon"
	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/fabric/ipam"
)

const (
	// reconcileEvery is how often the node releases addresses that no ledger record holds;
	// reconcileGrace spares allocations younger than that, whose ADD may still be running.
	reconcileEvery = time.Minute
	reconcileGrace = time.Minute
)

// builtinNetworks defines Loom's own primary network for the resolver when it is configured.
func builtinNetworks(primary *fabric.Network) map[string][]byte {
	if primary == nil {
		return nil
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":%q}`, daemon.BuiltinNetwork, fabric.Kind)
	return map[string][]byte{daemon.BuiltinNetwork: []byte(conf)}
}

// fabricState says whether the node's address blocks are loaded and the primary network is
// up: until then loomd is not ready.
type fabricState struct {
	mu      sync.Mutex
	loaded  bool
	lastErr error
}

func (f *fabricState) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lastErr != nil {
		return f.lastErr
	}
	if !f.loaded {
		return errors.New("loading this node's address blocks")
	}
	return nil
}

// loadedErr says whether the node's blocks are loaded, which is all loom-ipam needs.
func (f *fabricState) loadedErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		return errors.New("this node's address blocks are not loaded yet")
	}
	return nil
}

func (f *fabricState) set(loaded bool, err error) {
	f.mu.Lock()
	f.loaded, f.lastErr = loaded, err
	f.mu.Unlock()
}

// startFabric loads the node's address blocks, retrying with back-off while the API server
// does not answer, then brings up the primary network. A primary network that cannot start
// is a fatal error: loomd exits with it, and its supervisor (the DaemonSet) restarts it.
func startFabric(ctx context.Context, alloc *ipam.Allocator, primary *fabric.Network, fab *fabricState, log *slog.Logger) error {
	delay := 500 * time.Millisecond
	for {
		err := alloc.Load(ctx)
		if err == nil {
			break
		}
		err = fmt.Errorf("load this node's address blocks: %w", err)
		fab.set(false, err)
		log.Warn("address blocks not loaded yet", "error", err, "retryIn", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
	fab.set(true, nil)
	if primary == nil {
		return nil
	}
	fab.set(true, errors.New("starting the primary network"))
	if err := primary.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		fab.set(true, err)
		return fmt.Errorf("start the primary network: %w", err)
	}
	fab.set(true, nil)
	return nil
}

// reconcileAddresses releases, every reconcileEvery, the addresses of this node's blocks that
// belong to containers the ledger does not hold: DELs that ran while loomd was down or the
// API server unreachable, and ADDs that died half-way.
func reconcileAddresses(ctx context.Context, alloc *ipam.Allocator, orch *delegate.Orchestrator, fab *fabricState, log *slog.Logger) {
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if fab.err() != nil {
			continue
		}
		recs, err := orch.Records()
		if err != nil {
			log.Warn("reconcile addresses: read the ledger", "error", err)
			continue
		}
		live := map[string]bool{}
		for _, r := range recs {
			live[string(r.ContainerID)] = true
		}
		n, err := alloc.Reconcile(ctx, func(id string) bool { return live[id] }, reconcileGrace)
		if err != nil {
			log.Warn("reconcile addresses", "error", err)
		}
		if n > 0 {
			log.Info("released addresses no attachment holds", "count", n)
		}
	}
}
