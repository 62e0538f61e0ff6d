package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"time"
)

// controllerHealthPort is where loom-controller serves its health endpoints, on the API
// server's address (which the nodes reach too).
const controllerHealthPort = "9466"

// controllerWebhookPort is where loom-controller serves its admission webhook, on the API
// server's address: the API server calls it there by URL, as a real one would call the
// controller's Service.
const controllerWebhookPort = "9443"

func (c *Cluster) controllerHealthAddress() string {
	return net.JoinHostPort(c.st.APIServerIP, controllerHealthPort)
}

// ControllerHealthAddress is where loom-controller serves /healthz and /metrics, reachable
// from the root network namespace (and from the nodes).
func (c *Cluster) ControllerHealthAddress() string { return c.controllerHealthAddress() }

func (c *Cluster) controllerWebhookAddress() string {
	return net.JoinHostPort(c.st.APIServerIP, controllerWebhookPort)
}

// controllerArgs is loom-controller's command line. It serves the admission webhook when it
// takes the webhook flags, which its usage (-h) lists; a stand-in that takes only the flags
// it needs is started without them.
func (c *Cluster) controllerArgs() (argv []string, webhook bool) {
	// A test cluster's objects are seconds old: reclaim after seconds, not the minute a real
	// cluster waits.
	argv = []string{c.st.Options.Controller, "--kubeconfig", c.l.kubeconfig(), "--health-address", c.controllerHealthAddress(),
		"--interval", "2s", "--grace", "5s"}
	usage, _ := exec.Command(c.st.Options.Controller, "-h").CombinedOutput()
	if !bytes.Contains(usage, []byte("-webhook-url")) {
		return argv, false
	}
	return append(argv, "--webhook-address", c.controllerWebhookAddress(), "--webhook-url", "https://"+c.controllerWebhookAddress()), true
}

// startController starts loom-controller in the root namespace, as a process of the
// cluster (pid file controller, log DIR/controller.log), and waits until it listens on its
// health address and, when it serves the webhook, on its webhook address.
func (c *Cluster) startController(ctx context.Context) error {
	logFile := c.l.log("controller")
	argv, webhook := c.controllerArgs()
	ref, err := startDetached(argv, os.Environ(), logFile, c.slot.pidFile("controller"))
	if err != nil {
		return err
	}
	addrs := []string{c.controllerHealthAddress()}
	if webhook {
		addrs = append(addrs, c.controllerWebhookAddress())
	}
	err = poll(ctx, 30*time.Second, func() (bool, error) {
		if !ref.alive() {
			return false, fmt.Errorf("it exited: %s: see %s", lastLine(logFile), logFile)
		}
		for _, a := range addrs {
			conn, dialErr := net.DialTimeout("tcp", a, time.Second)
			if dialErr != nil {
				return false, nil
			}
			conn.Close()
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("start loom-controller (listening on %v): %w", addrs, err)
	}
	return nil
}

// StopController stops loom-controller as a rollout would: SIGTERM, so that it hands over
// its leadership, and SIGKILL if it is still there ten seconds later. Its webhook stays
// registered and fails closed: until it is started again, the API server refuses to create
// pods and NADs outside kube-system, and Tenants.
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
