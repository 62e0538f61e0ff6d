package perf

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Endpoint is one end of a measured path: a network namespace, and the address in it that
// servers listen on and clients connect to.
type Endpoint struct {
	// Name is what messages call the endpoint.
	Name string
	IP   netip.Addr
	// Cmd returns a command that runs argv in the endpoint's network namespace.
	Cmd func(ctx context.Context, argv ...string) (*exec.Cmd, error)
}

// InNetns returns the endpoint at ip in the network namespace whose file is at netns (as
// /run/netns/NAME), its commands run there by nsenter.
func InNetns(name, netns string, ip netip.Addr) Endpoint {
	return Endpoint{
		Name: name,
		IP:   ip,
		Cmd: func(ctx context.Context, argv ...string) (*exec.Cmd, error) {
			return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--"}, argv...)...), nil
		},
	}
}

// Ping sends one ping from from to to's address and returns an error unless an answer
// comes within timeout.
func Ping(ctx context.Context, from, to Endpoint, timeout time.Duration) error {
	_, err := output(ctx, from, "ping", "-n", "-q", "-c", "1", "-W", seconds(timeout), to.IP.String())
	return err
}

// Sleep waits d or until ctx ends, and says whether ctx is still alive.
func Sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// output runs argv at endpoint e and returns its standard output; an error carries the end
// of its standard error. A run that hangs is killed a minute after it should have ended.
func output(ctx context.Context, e Endpoint, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd, err := e.Cmd(ctx, argv...)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", argv[0], e.Name, err, lastLines(stderr.Bytes(), 3))
	}
	return out, nil
}

// seconds renders d as the whole number of seconds iperf3, sockperf and ping take, at least
// one.
func seconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second)))
}

// lastLines returns the last n lines of b on one line.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}
