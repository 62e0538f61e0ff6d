package perf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"time"
)

// The ports the servers listen on, in every server endpoint's own namespace.
const (
	IperfPort    = 5201
	SockperfPort = 11111
)

// attempts is how often a client run is tried before a measurement fails.
const attempts = 3

// StartServers starts an iperf3 and a sockperf server at each endpoint (once for each name),
// the sockperf servers pinned to cpu as taskset -c takes it, and returns the function that
// stops them. The servers die with this process even if it is killed.
func StartServers(ctx context.Context, cpu string, at ...Endpoint) (stop func(), err error) {
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
	for _, e := range at {
		if started[e.Name] {
			continue
		}
		started[e.Name] = true
		for _, argv := range [][]string{
			{"iperf3", "--server", "--bind", e.IP.String(), "--port", strconv.Itoa(IperfPort)},
			{"taskset", "-c", cpu, "sockperf", "server", "--tcp", "-i", e.IP.String(), "-p", strconv.Itoa(SockperfPort)},
		} {
			cmd, err := e.Cmd(ctx, argv...)
			if err != nil {
				return nil, err
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				return nil, fmt.Errorf("start %s in %s: %w", argv[0], e.Name, err)
			}
			cmds = append(cmds, cmd)
		}
	}
	ok = true
	return stop, nil
}

// Throughput runs one iperf3 test of length d from client to the iperf3 server StartServers
// started at server, a single TCP stream, and returns what the server received, in Gbit/s.
// If every attempt fails, the error names both ends and carries the last attempt's.
func Throughput(ctx context.Context, client, server Endpoint, d time.Duration) (float64, error) {
	var last error
	for range attempts {
		out, err := output(ctx, client, "iperf3", "--client", server.IP.String(), "--port", strconv.Itoa(IperfPort),
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
		if !Sleep(ctx, 500*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("iperf3 from %s to %s: %w", client.Name, server.Name, last)
}

var sockperfP50 = regexp.MustCompile(`percentile 50\.000 =\s*([0-9.]+)`)

// LatencyP50 runs one sockperf TCP ping-pong test of length d from client to the sockperf
// server StartServers started at server, the client pinned to cpu as the server is, and
// returns the median round-trip time in µs. If every attempt fails, the error names both
// ends and carries the last attempt's.
func LatencyP50(ctx context.Context, client, server Endpoint, d time.Duration, cpu string) (float64, error) {
	var last error
	for range attempts {
		out, err := output(ctx, client, "taskset", "-c", cpu, "sockperf", "ping-pong", "--tcp", "--full-rtt",
			"-i", server.IP.String(), "-p", strconv.Itoa(SockperfPort), "-t", seconds(d))
		m := sockperfP50.FindSubmatch(out)
		switch {
		case err != nil:
			last = err
		case m == nil:
			last = fmt.Errorf("no median in sockperf's report: %s", lastLines(out, 3))
		default:
			return strconv.ParseFloat(string(m[1]), 64)
		}
		if !Sleep(ctx, 500*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("sockperf from %s to %s: %w", client.Name, server.Name, last)
}
