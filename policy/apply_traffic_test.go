package policy

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// TestApplyTraffic sends real traffic between two pods of a node, both routed /32 pods on
// veths named like Loom's, through the node namespace whose forward hook holds the table.
func TestApplyTraffic(t *testing.T) {
	nft := nftForTest(t)
	ctx := context.Background()
	node, client, server := applyNetns(t), applyNetns(t), applyNetns(t)
	const clientVeth, serverVeth = "loom00000000c01", "loom00000000501"
	const clientIP, serverIP = "10.99.0.2", "10.99.0.3"
	applyExec(t, node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	applyPlugPod(t, node, client, clientVeth, clientIP)
	applyPlugPod(t, node, server, serverVeth, serverIP)
	for _, port := range []string{"8080", "8081"} {
		applyEchoServer(t, server, serverIP+":"+port)
	}

	// check probes the three kinds of traffic at once; a dropped probe costs its timeout.
	check := func(step string, pingOK, ok8080, ok8081 bool) {
		t.Helper()
		pinged := make(chan bool, 1)
		go func() { pinged <- applyPing(client, serverIP) }()
		errs := make([]chan error, 2)
		for i, port := range []string{"8080", "8081"} {
			errs[i] = make(chan error, 1)
			go func() { errs[i] <- applyEcho(client, serverIP+":"+port) }()
		}
		if got := <-pinged; got != pingOK {
			t.Errorf("%s: ping passes: %v, want %v", step, got, pingOK)
		}
		for i, want := range []bool{ok8080, ok8081} {
			if err := <-errs[i]; (err == nil) != want {
				t.Errorf("%s: TCP %d: got %v, want passing %v", step, 8080+i, err, want)
			}
		}
	}
	check("no table", true, true, true)

	a := NewApplier(nft, node, nil)
	sets := map[string]AddrSet{
		"p_client":  {Addrs: renderAddrs(clientIP)},
		"u_primary": {Prefixes: renderPrefixes("10.99.0.0/24")},
		"t_nobody":  {},
	}
	onlyClient8080 := Direction{Isolated: true, Rules: []Rule{
		{Peer: Peer{Set: "p_client"}, Ports: []Port{{Protocol: "TCP", Port: 8080}}, Policy: "test/only-8080"},
	}}
	apply := func(eps ...EndpointRules) {
		t.Helper()
		if err := a.Apply(ctx, Render(Table{Sets: sets, Endpoints: eps}, HostTable)); err != nil {
			t.Fatal(err)
		}
	}

	apply(EndpointRules{Interface: clientVeth}, EndpointRules{Interface: serverVeth, Ingress: onlyClient8080})
	check("server isolated, TCP 8080 from the client allowed", false, true, false)

	guarded := onlyClient8080
	guarded.Guard = Guard{Universe: "u_primary", Allowed: "t_nobody"}
	apply(EndpointRules{Interface: clientVeth}, EndpointRules{Interface: serverVeth, Ingress: guarded})
	check("a guard that drops the client", false, false, false)

	apply(EndpointRules{Interface: clientVeth, Egress: Direction{Isolated: true, Rules: []Rule{
		{Peer: Peer{Any: true}, Ports: []Port{{Protocol: "TCP", Port: 8080}}, Policy: "test/egress-8080"},
	}}}, EndpointRules{Interface: serverVeth})
	check("client egress isolated, TCP 8080 allowed, replies pass", false, true, false)

	// The server's rules let everyone in; a veth without rules of its own still passes
	// nothing once the node has rules at all.
	apply(EndpointRules{Interface: serverVeth, Ingress: Direction{Isolated: true, Rules: []Rule{{Peer: Peer{Any: true}, Policy: "test/all"}}}})
	check("the client's veth has no rules", false, false, false)

	// A node none of whose pods has rules is not hooked at all: everything passes.
	apply(EndpointRules{Interface: serverVeth})
	check("no pod has rules", true, true, true)

	if err := a.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	check("table deleted", true, true, true)
}

// plugPod connects a pod namespace to the node as Loom's primary network does: a veth whose
// host end holds 169.254.1.1, the pod's address as a /32, host routes both ways.
func applyPlugPod(t *testing.T, node, pod, hostVeth, ip string) {
	t.Helper()
	podName := filepath.Base(pod)
	for _, cmd := range [][]string{
		{"ip", "link", "add", hostVeth, "type", "veth", "peer", "name", "eth0", "netns", podName},
		{"ip", "addr", "add", "169.254.1.1/32", "dev", hostVeth, "scope", "link"},
		{"ip", "link", "set", hostVeth, "up"},
		{"ip", "route", "add", ip + "/32", "dev", hostVeth, "scope", "link"},
	} {
		applyExec(t, node, cmd...)
	}
	for _, cmd := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "addr", "add", ip + "/32", "dev", "eth0"},
		{"ip", "route", "add", "169.254.1.1/32", "dev", "eth0", "scope", "link"},
		{"ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
	} {
		applyExec(t, pod, cmd...)
	}
}

// echoServer serves, in the namespace at path, TCP connections that get back what they send.
func applyEchoServer(t *testing.T, path, addr string) {
	t.Helper()
	var l net.Listener
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
}

// echo connects from the namespace at path to addr and checks that what it sends comes back.
func applyEcho(path, addr string) error {
	var c net.Conn
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 400*time.Millisecond)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("loom\n")); err != nil {
		return err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "loom\n" {
		return errors.New("echo came back changed: " + string(buf))
	}
	return nil
}

// ping reports whether one ping from the namespace at path to ip gets an answer.
func applyPing(path, ip string) bool {
	name := filepath.Base(path)
	out, err := exec.Command("ip", "netns", "exec", name, "ping", "-c1", "-W0.5", ip).CombinedOutput()
	return err == nil && strings.Contains(string(out), "1 received")
}
