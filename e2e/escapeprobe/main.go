// Command escapeprobe is what the end-to-end escape suite (e2e/escape_test.go) runs inside a
// simulated pod or node, for what ping and a shell cannot do: send hand-built frames from a
// packet socket (any source MAC and IP, ARP requests and replies, IPv6 neighbour
// advertisements, frames of any ethertype, even claiming another ethertype to the kernel),
// listen for them on a packet socket bound to one ethertype, serve and dial TCP and UDP in
// both families (link-local addresses with a zone too), and send a VXLAN packet from an
// ordinary UDP socket. It is test scaffolding: never shipped, never linked into Loom.
//
// Every frame carries a marker (--marker) that the receiving side looks for, so a probe
// never mistakes other traffic for its own. Receivers print "listening" on stdout once their
// socket is open, so the sender can be started only then, and exit 0 when what they expect
// arrived, 1 when it did not within --timeout; any other exit status is a broken probe.
//
//	escapeprobe listen --if net1 --ethertype 0x88b5 --expect M --timeout 1s
//	escapeprobe frame  --if net1 --dst-mac ff:ff:ff:ff:ff:ff --ethertype 0x88b5 --marker M
//	escapeprobe arp    --if net1 --op reply --sender-ip 192.168.72.21 --target-ip … --marker M
//	escapeprobe udp    --if net1 --src 192.168.72.99 --dst 192.168.72.21 --port 9 --marker M
//	escapeprobe na     --if net1 --src fe80::1 --dst ff02::1 --target fd00:72::21 --marker M
//	escapeprobe serve  --proto tcp --port 7000 --expect M --timeout 1s
//	escapeprobe dial   --proto tcp --to [fe80::1%net1]:7000 --payload M --timeout 1s
//	escapeprobe vxlan  --to 192.168.1.2:4789 --inner-src-mac … --src … --dst … --port 7001 --payload M
//
// Frames go out through the interface's egress hooks like any other, and a socket bound to
// one ethertype is handed a frame only after the receiving interface's ingress hook: what
// "listen" reports is what got through both.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

// exit statuses
const (
	exitReceived = 0
	exitNothing  = 1
	exitBroken   = 2
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: escapeprobe listen|frame|arp|udp|na|serve|dial|vxlan [flags]")
		os.Exit(exitBroken)
	}
	cmds := map[string]func([]string) error{
		"listen": cmdListen, "frame": cmdFrame, "arp": cmdARP, "udp": cmdUDP, "na": cmdNA,
		"serve": cmdServe, "dial": cmdDial, "vxlan": cmdVXLAN,
	}
	run, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "escapeprobe: no command %q\n", os.Args[1])
		os.Exit(exitBroken)
	}
	err := run(os.Args[2:])
	switch {
	case err == nil:
		os.Exit(exitReceived)
	case errors.Is(err, errNothing):
		fmt.Println(err)
		os.Exit(exitNothing)
	default:
		fmt.Fprintf(os.Stderr, "escapeprobe %s: %v\n", os.Args[1], err)
		os.Exit(exitBroken)
	}
}

// errNothing says a receiver's timeout passed without what it expected.
var errNothing = errors.New("nothing arrived")

// listening tells the test that the receiver's socket is open.
func listening() {
	fmt.Println("listening")
	os.Stdout.Sync()
}

// receiverFlags are the flags every receiver takes.
type receiverFlags struct {
	expect  string
	timeout time.Duration
}

func (r *receiverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.expect, "expect", "", "marker the awaited frame or data carries (required)")
	fs.DurationVar(&r.timeout, "timeout", time.Second, "how long to wait")
}

func (r *receiverFlags) check() error {
	if r.expect == "" {
		return errors.New("--expect is required")
	}
	return nil
}

func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	return nil
}
