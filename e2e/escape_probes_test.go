package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// How the escape suite probes: a receiver (escapeprobe listen or serve) is started in the
// pod or node that must not be reached, and only once it says it listens is the sender
// started; the receiver's exit status says whether the frame or data got through. Controls
// are retried while the cluster settles; attempts are run once, after every control passed.

const (
	// probeWait is how long a receiver waits for what it expects.
	probeWait = "1500ms"
	// probeParallel is how many probes run at once on this two-core machine.
	probeParallel = 8
)

// side is where one end of a probe runs: a pod, or a node's own namespace when pod is nil.
type side struct {
	pod  *escPod
	node string
}

func (s side) String() string {
	if s.pod != nil {
		return s.pod.name
	}
	return s.node
}

// probe is one control (must pass) or attempt (must be blocked).
type probe struct {
	what    string
	control bool
	run     func() (bool, error)
}

func (x *escapeEnv) cmd(ctx context.Context, s side, argv ...string) (*exec.Cmd, error) {
	if s.pod != nil {
		return x.c.PodCmd(ctx, s.pod.ns, s.pod.name, argv...)
	}
	return x.c.NodeCmd(ctx, s.node, argv...)
}

// nextPort and nextMarker keep parallel probes apart.
func (x *escapeEnv) nextPort() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.port++
	return strconv.Itoa(x.port)
}

func (x *escapeEnv) nextMarker() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.marker++
	return fmt.Sprintf("loom-escape-%05d", x.marker)
}

// delivered runs receiver rxArgs (its marker already in it) in rx, then sender txArgs in tx
// once the receiver listens, and reports whether the receiver got what it waits for.
func (x *escapeEnv) delivered(rx side, rxArgs []string, tx side, txArgs []string) (bool, error) {
	ctx, cancel := context.WithTimeout(x.ctx, 30*time.Second)
	defer cancel()
	rcmd, err := x.cmd(ctx, rx, append([]string{x.probe}, rxArgs...)...)
	if err != nil {
		return false, err
	}
	var rerr bytes.Buffer
	rcmd.Stderr = &rerr
	stdout, err := rcmd.StdoutPipe()
	if err != nil {
		return false, err
	}
	if err = rcmd.Start(); err != nil {
		return false, err
	}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "listening" {
		rcmd.Wait()
		return false, fmt.Errorf("receiver %s %v did not listen: %s", rx, rxArgs, rerr.String())
	}
	tcmd, err := x.cmd(ctx, tx, append([]string{x.probe}, txArgs...)...)
	if err != nil {
		rcmd.Wait()
		return false, err
	}
	if out, terr := tcmd.CombinedOutput(); terr != nil {
		var exit *exec.ExitError
		if !errors.As(terr, &exit) || exit.ExitCode() != 1 {
			rcmd.Wait()
			return false, fmt.Errorf("sender %s %v: %v: %s", tx, txArgs, terr, out)
		}
	}
	for sc.Scan() {
	}
	return exitStatus(rcmd.Wait(), fmt.Sprintf("receiver %s %v: %s", rx, rxArgs, rerr.String()))
}

// exitStatus reads a probe's exit: 0 got it, 1 did not, anything else is a broken probe.
func exitStatus(err error, what string) (bool, error) {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return false, nil
	default:
		return false, fmt.Errorf("%s: %w", what, err)
	}
}

// ping reports whether one ICMP or ICMPv6 echo from a pod to addr is answered.
func (x *escapeEnv) ping(from *escPod, addr string) func() (bool, error) {
	return func() (bool, error) {
		_, err := x.c.PodExec(x.ctx, from.ns, from.name, "ping", "-n", "-c", "1", "-W", "1", addr)
		return err == nil, nil
	}
}

// socket reports whether TCP or UDP data from a pod to addr reaches a server in pod to.
func (x *escapeEnv) socket(proto string, from, to *escPod, addr string) func() (bool, error) {
	return func() (bool, error) {
		port, m := x.nextPort(), x.nextMarker()
		host := addr
		if strings.Contains(addr, ":") {
			host = "[" + addr + "]"
		}
		return x.delivered(side{pod: to}, []string{"serve", "--proto", proto, "--port", port, "--expect", m, "--timeout", probeWait},
			side{pod: from}, []string{"dial", "--proto", proto, "--to", host + ":" + port, "--payload", m, "--timeout", "1s"})
	}
}

// frame reports whether a frame a sender builds (escapeprobe command and flags, without
// --marker) reaches a packet socket bound to ethertype on ifname in rx.
func (x *escapeEnv) frame(tx side, rx side, ifname, ethertype string, send ...string) func() (bool, error) {
	return func() (bool, error) {
		m := x.nextMarker()
		return x.delivered(rx, []string{"listen", "--if", ifname, "--ethertype", ethertype, "--expect", m, "--timeout", probeWait},
			tx, append(send, "--marker", m))
	}
}

// runProbes runs the controls, each retried for a while as rules reach every pod, then the
// attempts, each once, and counts them. A control that never passes fails the test: the
// attempts it stands for prove nothing.
func (x *escapeEnv) runProbes(t *testing.T, probes []probe) {
	t.Helper()
	var controls, attempts []probe
	for _, p := range probes {
		if p.control {
			controls = append(controls, p)
		} else {
			attempts = append(attempts, p)
		}
	}
	x.parallel(controls, func(p probe) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			ok, err := p.run()
			if err != nil {
				t.Errorf("control %s: broken probe: %v", p.what, err)
				return
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("control %s: did not get through, so the attempts it stands for prove nothing", p.what)
				return
			}
			time.Sleep(time.Second)
		}
	})
	x.parallel(attempts, func(p probe) {
		ok, err := p.run()
		if err != nil {
			t.Errorf("attempt %s: broken probe: %v", p.what, err)
		}
		if ok {
			again, _ := p.run()
			t.Errorf("ESCAPE: %s got through (a second try: got through %v)", p.what, again)
		}
		x.record(t.Name()+": "+p.what, ok)
	})
}

func (x *escapeEnv) parallel(probes []probe, f func(probe)) {
	sem := make(chan struct{}, probeParallel)
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(p)
		}()
	}
	wg.Wait()
}
