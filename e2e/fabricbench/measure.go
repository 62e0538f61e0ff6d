package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The ports the servers listen on, in every server endpoint's own namespace.
const (
	iperfPort    = "5201"
	sockperfPort = "11111"
)

// attempts is how often a client run is tried before the benchmark gives up: a server
// that has just started, or has not yet noticed the previous client leave, refuses once.
const attempts = 3

// startServers starts an iperf3 and a sockperf server at the server end of every path, the
// sockperf server pinned to cpu, and returns the function that stops them. The servers die
// with this process even if it is killed.
func startServers(ctx context.Context, paths []path, cpu string) (stop func(), err error) {
	var cmds []*exec.Cmd
	stop = func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	ok := false
	defer func() {
		if !ok {
			stop()
		}
	}()
	started := map[string]bool{}
	for _, p := range paths {
		e := p.server
		if started[e.name] {
			continue
		}
		started[e.name] = true
		for _, argv := range [][]string{
			{"iperf3", "--server", "--bind", e.ip.String(), "--port", iperfPort},
			{"taskset", "-c", cpu, "sockperf", "server", "--tcp", "-i", e.ip.String(), "-p", sockperfPort},
		} {
			cmd, err := e.cmd(ctx, argv...)
			if err != nil {
				return nil, err
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				return nil, fmt.Errorf("start %s in %s: %w", argv[0], e.name, err)
			}
			cmds = append(cmds, cmd)
		}
	}
	ok = true
	return stop, nil
}

// waitReachable waits until the client end of p gets an answer to a ping from its server
// end: in bgp mode the routes arrive a moment after the cluster is up.
func waitReachable(ctx context.Context, p path, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := output(ctx, p.client, "ping", "-n", "-c", "1", "-W", "1", p.server.ip.String())
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s gets no answer from %s (%s) within %s: %w",
				p.label, p.client.name, p.server.name, p.server.ip, timeout, err)
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// throughput runs one iperf3 test of length d over p, a single TCP stream from the client to
// the server, and returns what the server received, in Gbit/s. Neither end is pinned: pinned
// to separate CPUs, the figures scattered more widely on the test machine.
func throughput(ctx context.Context, p path, d time.Duration) (float64, error) {
	var last error
	for range attempts {
		out, err := output(ctx, p.client, "iperf3", "--client", p.server.ip.String(), "--port", iperfPort,
			"--time", seconds(d), "--json")
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
			Error string `json:"error"`
		}
		jsonErr := json.Unmarshal(out, &res)
		switch {
		case res.Error != "":
			last = errors.New(res.Error)
		case err != nil:
			last = err
		case jsonErr != nil:
			last = fmt.Errorf("parse iperf3's report: %w", jsonErr)
		case res.End.SumReceived.BitsPerSecond <= 0:
			last = errors.New("iperf3 reports nothing received")
		default:
			return res.End.SumReceived.BitsPerSecond / 1e9, nil
		}
		if !sleep(ctx, 500*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("iperf3 %s: %w", p.label, last)
}

var sockperfP50 = regexp.MustCompile(`percentile 50\.000 =\s*([0-9.]+)`)

// latencyP50 runs one sockperf TCP ping-pong test of length d over p, the client pinned to
// cpu as the server is, and returns the median round-trip time in µs.
func latencyP50(ctx context.Context, p path, d time.Duration, cpu string) (float64, error) {
	var last error
	for range attempts {
		out, err := output(ctx, p.client, "taskset", "-c", cpu, "sockperf", "ping-pong", "--tcp", "--full-rtt",
			"-i", p.server.ip.String(), "-p", sockperfPort, "-t", seconds(d))
		m := sockperfP50.FindSubmatch(out)
		switch {
		case err != nil:
			last = err
		case m == nil:
			last = fmt.Errorf("no median in sockperf's report: %s", lastLines(out, 3))
		default:
			return strconv.ParseFloat(string(m[1]), 64)
		}
		if !sleep(ctx, 500*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("sockperf %s: %w", p.label, last)
}

// output runs argv at endpoint e and returns its standard output; an error carries the end
// of its standard error. A run that hangs is killed a minute after it should have ended.
func output(ctx context.Context, e endpoint, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd, err := e.cmd(ctx, argv...)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", argv[0], e.name, err, lastLines(stderr.Bytes(), 3))
	}
	return out, nil
}

// seconds renders d as the whole number of seconds iperf3 and sockperf take, at least one.
func seconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second)))
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}

// sleep waits d or until the context ends, and says whether it is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
