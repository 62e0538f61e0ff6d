package policy

// Applying keeps the "inet loom" table of one network namespace equal to the last table
// rendered for it.
//
// Design notes
//
// Every write is one "nft -f -" run, and nft runs a file as one kernel transaction: packets
// see the table before or after it, never half of it. The first write, and any write after
// a failure or after Verify found the table changed behind our back, replaces the whole
// table; the others send only the difference from the table last applied (set and map
// elements, the rules of changed chains), so one pod's change costs a few element commands
// whatever the size of its sets. An update nft refuses is logged and followed by a full
// replace, so a wrong guess about the kernel's state costs one slower write, not an outage.
//
// nft runs in the target namespace as a child of an OS thread locked into it: the ns
// package's WithNetNSPath runs a function on a thread switched into the namespace (and
// switched back, or thrown away, afterwards), and a process started from that thread is born
// in the namespace. nft is single-threaded and needs nothing else from the namespace, so
// this costs nothing beyond the nft process itself, where nsenter would add a second exec to
// every write on a path (CNI ADD) that waits for it.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Applier keeps one network namespace's "inet loom" table (or, made by NewLinkApplier, its
// "netdev loom" table) in step with what it is given. Its methods may be called from
// several goroutines.
type Applier struct {
	nft    string
	netns  string
	family string // "" for inet
	log    *slog.Logger

	mu sync.Mutex
	// applied is the table last written; nil when the kernel's table is not known to be
	// it (nothing written yet, a write failed, Verify found a difference, Reset).
	applied *NftTable
}

// NewApplier returns an Applier that runs the nft binary at path nft inside the network
// namespace at path netns ("" for the caller's own).
func NewApplier(nft, netns string, log *slog.Logger) *Applier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if netns != "" {
		log = log.With("netns", netns)
	}
	return &Applier{nft: nft, netns: netns, log: log}
}

// NewLinkApplier is NewApplier for the "netdev loom" table of a pod's link rules.
func NewLinkApplier(nft, netns string, log *slog.Logger) *Applier {
	a := NewApplier(nft, netns, log)
	a.family = nftLinkFamily
	return a
}

// ref names the Applier's table.
func (a *Applier) ref() string { return tableRef(a.family) }

// Apply makes the namespace's table want, in one transaction. The first call, and the first
// after a failure, Verify finding a difference or Reset, replaces the table whole; the others
// write only what differs from the table last applied.
func (a *Applier) Apply(ctx context.Context, want NftTable) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if want.Family != a.family {
		return fmt.Errorf("apply table %s%s: the applier keeps table %s", want.ref(), a.where(), a.ref())
	}
	script, inPlace := "", false
	if a.applied != nil {
		script, inPlace = updateScript(*a.applied, want)
		if inPlace && script == "" {
			return nil
		}
	}
	want = want.clone()
	if inPlace {
		err := a.run(ctx, script)
		if err == nil {
			a.applied = &want
			return nil
		}
		a.log.Warn("update of table "+a.ref()+" refused; replacing the table", "error", err)
	}
	a.applied = nil
	if err := a.run(ctx, replaceScript(want)); err != nil {
		return fmt.Errorf("replace table %s%s: %w", a.ref(), a.where(), err)
	}
	a.applied = &want
	return nil
}

// Reset forgets what was applied: the next Apply replaces the table whole.
func (a *Applier) Reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applied = nil
}

// Delete removes the table. A namespace without the table, or a namespace that no longer
// exists, is success.
func (a *Applier) Delete(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applied = nil
	err := a.run(ctx, deleteScript(a.family))
	var gone ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if err == nil || errors.As(err, &gone) || errors.As(err, &notNS) {
		return nil
	}
	return fmt.Errorf("delete table %s%s: %w", a.ref(), a.where(), err)
}

// run feeds script to nft in the Applier's namespace.
func (a *Applier) run(ctx context.Context, script string) error {
	_, err := a.nftOutput(ctx, script, "-f", "-")
	return err
}

// nftOutput runs nft with args and stdin in the Applier's namespace and returns its
// standard output; the error carries its standard error.
func (a *Applier) nftOutput(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	run := func() error {
		cmd := exec.CommandContext(ctx, a.nft, args...)
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Stdout = &stdout
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
	var err error
	if a.netns == "" {
		err = run()
	} else {
		err = ns.WithNetNSPath(a.netns, func(ns.NetNS) error { return run() })
	}
	return stdout.Bytes(), err
}

// where names the namespace in errors: nothing for the caller's own.
func (a *Applier) where() string {
	if a.netns == "" {
		return ""
	}
	return " in netns " + a.netns
}
