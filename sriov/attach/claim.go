package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/sriov/vf"
)

// claim is the record of a VF in use: who holds it, and everything DEL needs to give it back
// when loomd has restarted and the pod's netns is gone.
type claim struct {
	// The owner: one interface of one container.
	ContainerID delegate.ContainerID `json:"containerID"`
	Ifname      string               `json:"ifname"`
	Pod         delegate.PodRef      `json:"pod"`
	Netns       string               `json:"netns"`
	// Spec is the attachment's, for the IPAM DEL of a GC that has no call.
	Spec    delegate.Spec `json:"spec"`
	Created time.Time     `json:"created"`

	// VF is the VF's PCI address, PF its PF's; PFNetdev and Index address the VF's settings.
	VF       string `json:"vf"`
	PF       string `json:"pf"`
	PFNetdev string `json:"pfNetdev"`
	Index    int    `json:"index"`
	DPDK     bool   `json:"dpdk,omitempty"`

	// Netdev, MAC, MTU and Up are the VF's netdev as it was in the host; "" for a DPDK VF.
	Netdev string `json:"netdev,omitempty"`
	MAC    string `json:"mac,omitempty"`
	MTU    int    `json:"mtu,omitempty"`
	Up     bool   `json:"up,omitempty"`
	// Saved is what the PF held for the VF before ADD.
	Saved vf.State `json:"saved"`

	// PodMAC is the MAC the pod's interface got, which the PF holds for the VF too; for a
	// DPDK VF the MAC the PF holds.
	PodMAC string `json:"podMAC,omitempty"`
	// IPAM says the IPAM plugin may hold an address for the owner.
	IPAM bool `json:"ipam,omitempty"`
}

// heldBy reports whether the claim belongs to the interface of the call.
func (c claim) heldBy(call delegate.Call) bool {
	return c.ContainerID == call.ContainerID && c.Ifname == call.Ifname
}

func (c claim) owner() string {
	return fmt.Sprintf("interface %s of container %s (pod %s)", c.Ifname, c.ContainerID, c.Pod)
}

func (c claim) String() string {
	return fmt.Sprintf("vf %d of %s (%s)", c.Index, c.PF, c.VF)
}

// claims keeps one file per VF in use in a directory: <vf address>.json, created with link()
// so that a VF is claimed whole or not at all, and <vf address>.lock, flocked by whoever
// changes the VF. Lock files stay: removing one would let two processes lock different files
// of the same name.
//
// Claims are replaced atomically but not fsynced, as the attachment ledger is not: a claim
// sits on the ADD path, where an fsync costs milliseconds, and the one thing it would guard
// against is a power loss, after which the NIC's VFs are reset and no pod holds one.
type claims struct {
	dir string
}

// errClaimed is wrapped by create's error for a VF that has a claim already.
var errClaimed = errors.New("vf is claimed")

// lockPoll is how often lock tries again for a VF another call holds.
const lockPoll = 5 * time.Millisecond

// lock takes the VF's lock, waiting until ctx is done.
func (s claims) lock(ctx context.Context, addr string) (unlock func(), err error) {
	if err = os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock vf %s: %w", addr, err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, addr+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock vf %s: %w", addr, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock vf %s: %w", addr, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock vf %s: another call holds it: %w", addr, ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

func (s claims) path(addr string) string { return filepath.Join(s.dir, addr+".json") }

// load reads the VF's claim; ok is false when there is none.
func (s claims) load(addr string) (c claim, ok bool, err error) {
	b, err := os.ReadFile(s.path(addr))
	if errors.Is(err, fs.ErrNotExist) {
		return claim{}, false, nil
	}
	if err != nil {
		return claim{}, false, fmt.Errorf("read claim of vf %s: %w", addr, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return claim{}, false, fmt.Errorf("read claim of vf %s from %s: %w", addr, s.path(addr), err)
	}
	return c, true, nil
}

// create writes a new claim, failing with errClaimed when the VF has one.
func (s claims) create(c claim) error {
	tmp, err := s.writeTemp(c)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, s.path(c.VF)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("claim vf %s: %w", c.VF, errClaimed)
		}
		return fmt.Errorf("claim vf %s: %w", c.VF, err)
	}
	return nil
}

// save replaces the VF's claim with c.
func (s claims) save(c claim) error {
	tmp, err := s.writeTemp(c)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path(c.VF)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("update claim of vf %s: %w", c.VF, err)
	}
	return nil
}

func (s claims) writeTemp(c claim) (string, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode claim of vf %s: %w", c.VF, err)
	}
	if err = os.MkdirAll(s.dir, 0o700); err != nil {
		return "", fmt.Errorf("write claim of vf %s: %w", c.VF, err)
	}
	f, err := os.CreateTemp(s.dir, "."+c.VF+".*.tmp")
	if err != nil {
		return "", fmt.Errorf("write claim of vf %s: %w", c.VF, err)
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write claim of vf %s: %w", c.VF, err)
	}
	return f.Name(), nil
}

// remove drops the VF's claim; one already gone is not an error.
func (s claims) remove(addr string) error {
	if err := os.Remove(s.path(addr)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("drop claim of vf %s: %w", addr, err)
	}
	return nil
}

// list returns the addresses of the VFs that have claims.
func (s claims) list() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list vf claims: %w", err)
	}
	var addrs []string
	for _, e := range entries {
		if addr, ok := strings.CutSuffix(e.Name(), ".json"); ok && pciAddress.MatchString(addr) {
			addrs = append(addrs, addr)
		}
	}
	return addrs, nil
}

// find returns the address of the VF the call's interface holds, "" when it holds none.
func (s claims) find(call delegate.Call) (string, error) {
	addrs, err := s.list()
	if err != nil {
		return "", err
	}
	for _, addr := range addrs {
		c, ok, err := s.load(addr)
		if err != nil {
			return "", err
		}
		if ok && c.heldBy(call) {
			return addr, nil
		}
	}
	return "", nil
}
