package fabric

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/fabric/vxlan"
)

func TestSplitPeerErrors(t *testing.T) {
	bad := &vxlan.PeerError{Node: "n9", Reason: "VTEP MAC is multicast"}
	kernel := errors.New("add route: operation not permitted")
	peers, rest := splitPeerErrors(fmt.Errorf("sync 3 peers: %w", errors.Join(bad, kernel)))
	if len(peers) != 1 || !errors.Is(rest, kernel) {
		t.Errorf("peers %v, rest %v: want the peer's problem apart from the kernel's", peers, rest)
	}
	peers, rest = splitPeerErrors(fmt.Errorf("sync 1 peers: %w", errors.Join(bad)))
	if len(peers) != 1 || rest != nil {
		t.Errorf("only a peer's problem: peers %v, rest %v, want no failure", peers, rest)
	}
	if peers, rest = splitPeerErrors(nil); peers != nil || rest != nil {
		t.Errorf("nil: %v %v", peers, rest)
	}
}

// A remote node whose VTEP annotations disappear keeps its dataplane entries until it
// publishes new ones or leaves the cluster.
func TestVXLANPeersKeepLastPublished(t *testing.T) {
	n := NewNetwork(Settings{}, "node1", nil, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	node := func(name string, annotations map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
	}
	published := map[string]string{
		AnnotationUnderlayIP: "198.18.0.12",
		AnnotationVTEPMAC:    "0e:6c:0a:f4:01:00",
		AnnotationVTEPAddr:   "10.244.1.0",
	}
	blocks := map[string][]netip.Prefix{"node2": {netip.MustParsePrefix("10.244.1.0/26")}}
	peerOf := func(v view) string {
		peers := n.vxlanPeers(v)
		if len(peers) != 1 {
			return fmt.Sprintf("%d peers", len(peers))
		}
		p := peers[0]
		return fmt.Sprintf("%s %s %s %s %v", p.Node, p.UnderlayIP, p.VTEPMAC, p.VTEPAddr, p.Blocks)
	}
	want := "node2 198.18.0.12 0e:6c:0a:f4:01:00 10.244.1.0 [10.244.1.0/26]"

	if got := peerOf(view{nodes: map[string]*corev1.Node{"node2": node("node2", nil)}, blocks: blocks}); got != "0 peers" {
		t.Errorf("before node2 publishes: %s, want no peer", got)
	}
	if got := peerOf(view{nodes: map[string]*corev1.Node{"node2": node("node2", published)}, blocks: blocks}); got != want {
		t.Errorf("published: %s, want %s", got, want)
	}
	if got := peerOf(view{nodes: map[string]*corev1.Node{"node2": node("node2", map[string]string{AnnotationVTEPMAC: "junk"})}, blocks: blocks}); got != want {
		t.Errorf("annotations damaged: %s, want the last published %s", got, want)
	}
	moved := map[string]string{
		AnnotationUnderlayIP: "198.18.0.99",
		AnnotationVTEPMAC:    "0e:6c:0a:f4:01:00",
		AnnotationVTEPAddr:   "10.244.1.0",
	}
	if got := peerOf(view{nodes: map[string]*corev1.Node{"node2": node("node2", moved)}, blocks: blocks}); got != "node2 198.18.0.99 0e:6c:0a:f4:01:00 10.244.1.0 [10.244.1.0/26]" {
		t.Errorf("node2 publishes a new underlay address: %s", got)
	}
	// node2 leaves and comes back without annotations: nothing is remembered.
	n.vxlanPeers(view{nodes: map[string]*corev1.Node{}})
	if got := peerOf(view{nodes: map[string]*corev1.Node{"node2": node("node2", nil)}, blocks: blocks}); got != "0 peers" {
		t.Errorf("node2 deleted and back without annotations: %s, want no peer", got)
	}
}
