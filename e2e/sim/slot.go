package sim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const maxSlot = 250

// lockRunDir takes the lock that serialises slot reservation, reaping and teardown among
// every sim on the machine.
func lockRunDir(runDir string) (unlock func(), err error) {
	if err = os.MkdirAll(runDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(runDir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", runDir, err)
	}
	return func() { f.Close() }, nil
}

// existingSlots lists the slots that have a directory under runDir.
func existingSlots(runDir string) []slotDir {
	entries, _ := os.ReadDir(runDir)
	var slots []slotDir
	for _, e := range entries {
		n, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "slot-"))
		if err == nil && strings.HasPrefix(e.Name(), "slot-") && n >= 1 && n <= maxSlot {
			slots = append(slots, slotDir{runDir, n})
		}
	}
	return slots
}

// live says whether the cluster in the slot still runs: its Up is in progress (or, for an
// Ephemeral cluster, the process that called Up lives), or its directory still describes it
// and one of its processes lives. A dead slot may be reaped.
func (s slotDir) live() bool {
	if owner, err := readPidFile(s.ownerFile()); err == nil && owner.alive() {
		return true
	}
	st, err := readState(s.clusterDir())
	if err != nil || st.Slot != s.slot || st.Options.Ephemeral {
		return false
	}
	entries, _ := os.ReadDir(filepath.Dir(s.pidFile("x")))
	for _, e := range entries {
		if p, err := readPidFile(s.pidFile(e.Name())); err == nil && p.alive() {
			return true
		}
	}
	return false
}

// ErrLive is returned by Up for a directory that already hosts a running cluster.
var ErrLive = errors.New("a simulated cluster is already running there")

// reserveSlot reaps the dead slots (with reap), refuses a directory that still hosts a live
// cluster, and takes the lowest free slot for dir, recording dir and the calling process as
// its owner.
func reserveSlot(ctx context.Context, runDir, dir string, p *progress, reap func(context.Context, slotDir, *progress) error) (slotDir, error) {
	unlock, err := lockRunDir(runDir)
	if err != nil {
		return slotDir{}, err
	}
	defer unlock()
	used := map[int]bool{}
	for _, s := range existingSlots(runDir) {
		if s.live() {
			if s.clusterDir() == dir {
				return slotDir{}, fmt.Errorf("%s (slot %d): %w: run loomctl sim down --dir %s first", dir, s.slot, ErrLive, dir)
			}
			used[s.slot] = true
			continue
		}
		p.printf("reaping the dead cluster in slot %d (was %s)", s.slot, s.clusterDir())
		if err := reap(ctx, s, p); err != nil {
			p.printf("slot %d: %v (skipping it)", s.slot, err)
			used[s.slot] = true
		}
	}
	for n := 1; n <= maxSlot; n++ {
		if used[n] {
			continue
		}
		s := slotDir{runDir, n}
		if err := os.Mkdir(s.path(), 0o755); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return slotDir{}, err
		}
		self, err := refOf(os.Getpid())
		if err == nil {
			err = writePidFile(s.ownerFile(), self)
		}
		if err == nil {
			err = writeFileAtomic(s.dirFile(), []byte(dir+"\n"), 0o644)
		}
		if err != nil {
			os.RemoveAll(s.path())
			return slotDir{}, err
		}
		return s, nil
	}
	return slotDir{}, fmt.Errorf("all %d slots under %s are in use by running clusters", maxSlot, runDir)
}
