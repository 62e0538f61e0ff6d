// Package nftexec runs the nft binary inside a network namespace: the one way Loom's
// components that write nftables tables start nft.
//
// nft runs as a child of an OS thread locked into the namespace: the ns package's
// WithNetNSPath runs a function on a thread switched into the namespace (and switched back,
// or thrown away when that fails), and a process started from that thread is born in the
// namespace. nft is single-threaded and needs nothing else from the namespace, so this costs
// nothing beyond the nft process itself, where nsenter would add a second exec to every run.
package nftexec

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Run runs nftPath with args, feeding it stdin, inside the network namespace at netnsPath
// ("" for the caller's own), and returns its standard output. A failure's error names the
// arguments and carries nft's standard error; a namespace that cannot be entered is an error
// of its own.
func Run(ctx context.Context, nftPath, netnsPath, stdin string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	run := func() error {
		cmd := exec.CommandContext(ctx, nftPath, args...)
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
	if netnsPath == "" {
		err := run()
		return stdout.Bytes(), err
	}
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error { return run() })
	return stdout.Bytes(), err
}
