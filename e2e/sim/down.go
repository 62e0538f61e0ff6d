package sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Down stops the cluster whose directory is o.Dir and removes everything it made outside
// that directory: processes, namespaces, links, mounts and its slot. It works on a cluster
// that crashed or was half built, and does nothing for a directory without one. The
// directory itself is kept, with its logs.
func Down(ctx context.Context, o Options) error {
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	p := newProgress(o.Progress)
	runDir := o.RunDir
	st, stErr := readState(dir)
	if stErr == nil && st.Options.RunDir != "" {
		runDir = st.Options.RunDir
	}
	if runDir == "" {
		runDir = "/run/loom-sim"
	}
	unlock, err := lockRunDir(runDir)
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	done := map[int]bool{}
	for _, s := range existingSlots(runDir) {
		if s.clusterDir() == dir {
			errs = append(errs, teardownSlot(ctx, s, p))
			done[s.slot] = true
		}
	}
	// A slot directory removed by hand still leaves the slot's namespaces and link behind.
	if s := (slotDir{runDir, st.Slot}); stErr == nil && !done[st.Slot] && st.Slot > 0 {
		if _, err := os.Stat(s.path()); errors.Is(err, os.ErrNotExist) {
			errs = append(errs, teardownSlot(ctx, s, p))
		}
	}
	if err := os.Remove(layout{dir}.stateFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("down %s: %w", dir, err)
	}
	p.printf("cluster in %s is down", dir)
	return nil
}

// teardownSlot removes everything a cluster in slot s made, without relying on its
// directory: it finds the processes by pid file and by namespace, and the namespaces and
// link by name.
func teardownSlot(ctx context.Context, s slotDir, p *progress) error {
	stopped, err := stopSlotProcesses(ctx, s)
	errs := []error{err}
	pins, _ := os.ReadDir(s.nsDir())
	for _, e := range pins {
		errs = append(errs, unmountPin(filepath.Join(s.nsDir(), e.Name())))
	}
	if err := unix.Unmount(s.nsDir(), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", s.nsDir(), err))
	}
	netnsNames := slotNetNS(s)
	for _, name := range netnsNames {
		errs = append(errs, unmountPin(filepath.Join("/run/netns", name)))
	}
	if l, err := netlink.LinkByName(s.hostLink()); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete link %s: %w", s.hostLink(), err))
		}
	}
	if err := os.RemoveAll(s.etcdData()); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(s.path()); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down slot %d: %w", s.slot, err)
	}
	p.printf("slot %d released: %d processes stopped, %d network namespaces deleted", s.slot, stopped, len(netnsNames))
	return nil
}

// stopSlotProcesses kills etcd and the API server, and stops every other process of the
// slot: the supervisors by pid file, and whatever runs in a node's mount or network
// namespace (loomd, plugins, commands run with exec). It returns how many were running.
func stopSlotProcesses(ctx context.Context, s slotDir) (int, error) {
	var control, others []procRef
	pidEntries, _ := os.ReadDir(filepath.Dir(s.pidFile("x")))
	for _, e := range pidEntries {
		ref, err := readPidFile(s.pidFile(e.Name()))
		switch {
		case err != nil:
		case e.Name() == "etcd" || e.Name() == "apiserver":
			control = append(control, ref)
		default:
			others = append(others, ref)
		}
	}
	inodes := map[uint64]bool{}
	pins, _ := os.ReadDir(s.nsDir())
	for _, e := range pins {
		pin := filepath.Join(s.nsDir(), e.Name())
		if ino, err := nsInode(pin); err == nil && isNamespacePin(pin) {
			inodes[ino] = true
		}
	}
	for _, name := range slotNetNS(s) {
		if ino, err := nsInode(filepath.Join("/run/netns", name)); err == nil {
			inodes[ino] = true
		}
	}
	all := append(append(others, procsInNamespaces(inodes)...), control...)
	running := map[procRef]bool{}
	for _, ref := range all {
		if ref.alive() {
			running[ref] = true
		}
	}
	for _, c := range control {
		c.signal(syscall.SIGKILL)
	}
	if err := stopProcs(ctx, all, 3*time.Second); err != nil {
		return len(running), fmt.Errorf("stop processes: %w", err)
	}
	return len(running), nil
}

// slotNetNS lists the network namespaces named for the slot.
func slotNetNS(s slotDir) []string {
	entries, _ := os.ReadDir("/run/netns")
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), s.netnsPrefix()) {
			names = append(names, e.Name())
		}
	}
	return names
}
