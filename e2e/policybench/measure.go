package main

// Traffic is measured as fabricbench measures it (e2e/fabricbench/measure.go): one iperf3
// TCP stream for throughput, sockperf's TCP ping-pong with both ends pinned to one CPU for
// latency, a client run retried when a server that has just started refuses once.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// The ports the servers listen on, in the server pod's namespace.
const (
	iperfPort    = 5201
	sockperfPort = 11111
)

// attempts is how often a client run is tried before the benchmark gives up.
const attempts = 3

// startServers starts an iperf3 and a sockperf server in e, the sockperf server pinned to
// cpu, and returns the function that stops them. The servers die with this process even if
// it is killed.
func startServers(ctx context.Context, e endpoint, cpu string) (stop func(), err error) {
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
	for _, argv := range [][]string{
		{"iperf3", "--server", "--bind", e.ip.String(), "--port", strconv.Itoa(iperfPort)},
		{"taskset", "-c", cpu, "sockperf", "server", "--tcp", "-i", e.ip.String(), "-p", strconv.Itoa(sockperfPort)},
	} {
		cmd := e.cmd(ctx, argv...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s in %s: %w", argv[0], e.name, err)
		}
		cmds = append(cmds, cmd)
	}
	ok = true
	return stop, nil
}

// throughput runs one iperf3 test of length d from client to server, a single TCP stream,
// and returns what the server received, in Gbit/s.
func throughput(ctx context.Context, client, server endpoint, d time.Duration) (float64, error) {
	var last error
	for range attempts {
		out, err := output(ctx, client, "iperf3", "--client", server.ip.String(), "--port", strconv.Itoa(iperfPort),
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
	return 0, fmt.Errorf("iperf3 from %s to %s: %w", client.name, server.name, last)
}

var sockperfP50 = regexp.MustCompile(`percentile 50\.000 =\s*([0-9.]+)`)

// latencyP50 runs one sockperf TCP ping-pong test of length d from client to server, the
// client pinned to cpu as the server is, and returns the median round-trip time in µs.
func latencyP50(ctx context.Context, client, server endpoint, d time.Duration, cpu string) (float64, error) {
	var last error
	for range attempts {
		out, err := output(ctx, client, "taskset", "-c", cpu, "sockperf", "ping-pong", "--tcp", "--full-rtt",
			"-i", server.ip.String(), "-p", strconv.Itoa(sockperfPort), "-t", seconds(d))
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
	return 0, fmt.Errorf("sockperf from %s to %s: %w", client.name, server.name, last)
}

// ping says whether from gets an answer to one ping to ip within timeout.
func ping(ctx context.Context, from endpoint, ip netip.Addr, timeout time.Duration) bool {
	_, err := output(ctx, from, "ping", "-n", "-q", "-c", "1", "-W", seconds(timeout), ip.String())
	return err == nil
}

// connects says whether from can open a TCP connection to ip:port within timeout. The
// socket is made on a thread inside from's namespace, and stays there.
func connects(from endpoint, ip netip.Addr, port int, timeout time.Duration) bool {
	err := ns.WithNetNSPath(from.netns, func(ns.NetNS) error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(ip, uint16(port)).String(), timeout)
		if err != nil {
			return err
		}
		return conn.Close()
	})
	return err == nil
}

// output runs argv at endpoint e and returns its standard output; an error carries the end
// of its standard error. A run that hangs is killed a minute after it should have ended.
func output(ctx context.Context, e endpoint, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := e.cmd(ctx, argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", argv[0], e.name, err, lastLines(stderr.Bytes(), 3))
	}
	return out, nil
}

// seconds renders d as the whole number of seconds iperf3, sockperf and ping take, at least
// one.
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

// pairedRatios divides each round's figure by the baseline's of the same round.
func pairedRatios(figures, baseline []float64) []float64 {
	r := make([]float64, len(figures))
	for i := range figures {
		r[i] = figures[i] / baseline[i]
	}
	return r
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDuration(ds []time.Duration) time.Duration {
	fs := make([]float64, len(ds))
	for i, d := range ds {
		fs[i] = float64(d)
	}
	return time.Duration(median(fs))
}

func join(xs []float64, format string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(s, " ")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func joinMS(ds []time.Duration) string {
	fs := make([]float64, len(ds))
	for i, d := range ds {
		fs[i] = ms(d)
	}
	return join(fs, "%.1f")
}
