package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// controllerHealthPort is where loom-controller serves its health endpoints, on the API
// server's address (which the nodes reach too).
const controllerHealthPort = "9466"

func (c *Cluster) controllerHealthAddress() string {
	return net.JoinHostPort(c.st.APIServerIP, controllerHealthPort)
}

// startController starts loom-controller in the root namespace, as a process of the
// cluster (pid file controller, log DIR/controller.log), and waits until it listens on its
// health address.
func (c *Cluster) startController(ctx context.Context) error {
	logFile := c.l.log("controller")
	// A test cluster's objects are seconds old: reclaim after seconds, not the minute a real
	// cluster waits.
	argv := []string{c.st.Options.Controller, "--kubeconfig", c.l.kubeconfig(), "--health-address", c.controllerHealthAddress(),
		"--interval", "2s", "--grace", "5s"}
	ref, err := startDetached(argv, os.Environ(), logFile, c.slot.pidFile("controller"))
	if err != nil {
		return err
	}
	err = poll(ctx, 30*time.Second, func() (bool, error) {
		if !ref.alive() {
			return false, fmt.Errorf("it exited: %s: see %s", lastLine(logFile), logFile)
		}
		conn, dialErr := net.DialTimeout("tcp", c.controllerHealthAddress(), time.Second)
		if dialErr != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("start loom-controller (health address %s): %w", c.controllerHealthAddress(), err)
	}
	return nil
}

// StopController stops loom-controller as a rollout would: SIGTERM, so that it hands over
// its leadership, and SIGKILL if it is still there ten seconds later.
func (c *Cluster) StopController() error {
	ref, err := readPidFile(c.slot.pidFile("controller"))
	if err != nil {
		return fmt.Errorf("stop loom-controller: %w", err)
	}
	return stopProcs(context.Background(), []procRef{ref}, 10*time.Second)
}

// StartController starts loom-controller again and waits until it listens on its health
// address. It does nothing if loom-controller runs.
func (c *Cluster) StartController(ctx context.Context) error {
	if c.st.Options.Controller == "" {
		return errors.New("start loom-controller: the cluster has none: set Options.Controller, or put loom-controller in BinDir")
	}
	if ref, err := readPidFile(c.slot.pidFile("controller")); err == nil && ref.alive() {
		return nil
	}
	return c.startController(ctx)
}
