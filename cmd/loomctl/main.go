// Command loomctl is Loom's command-line tool: node and tenant status, connectivity checks,
// and the local simulated cluster used by demos and end-to-end tests (loomctl sim).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand(os.Getenv).ExecuteContext(ctx)
	stop()
	var exit exitCode
	switch {
	case errors.As(err, &exit):
		os.Exit(int(exit))
	case err != nil:
		fmt.Fprintln(os.Stderr, "loomctl:", err)
		os.Exit(1)
	}
}

// newRootCommand assembles loomctl. Each subcommand lives in a file of its own and is
// added here, one line each.
func newRootCommand(getenv func(string) string) *cobra.Command {
	root := &cobra.Command{
		Use:           "loomctl",
		Short:         "Inspect and exercise Loom, the multi-tenant multi-network CNI",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newSimCommand(getenv),
		newConnectivityCommand(getenv),
		newTenantsCommand(getenv),
		newStatusCommand(getenv),
	)
	return root
}

// exitCode is an error that only carries the exit status a command passes on, such as the
// status of a command run in a pod.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
