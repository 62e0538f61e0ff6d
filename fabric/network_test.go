package fabric

import (
	"errors"
	"fmt"
	"testing"

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
