package delegate

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// State is how far an attachment got.
type State string

const (
	// StatePlanned: resolved, not yet attempted. Nothing to release.
	StatePlanned State = "planned"
	// StateAdding: recorded before the delegate's ADD ran; it may have left something behind,
	// so DEL must run for it.
	StateAdding State = "adding"
	// StateAdded: the delegate's ADD succeeded; Result holds what it returned.
	StateAdded State = "added"
)

// Entry is one attachment in the ledger.
type Entry struct {
	Spec
	State      State           `json:"state"`
	Result     json.RawMessage `json:"result,omitempty"`
	DeviceInfo json.RawMessage `json:"deviceInfo,omitempty"`
}

// Record is everything Loom attached, or tried to attach, to one container.
type Record struct {
	ContainerID ContainerID `json:"containerID"`
	Netns       string      `json:"netns"`
	Pod         PodRef      `json:"pod"`
	Created     time.Time   `json:"created"`
	Attachments []Entry     `json:"attachments"`
}

// Ledger is the node's record of attachments: one JSON file per container, replaced
// atomically (a temporary file renamed over the record), so a crash of loomd or of the loom
// binary leaves the old record or the new one, never a torn one. It survives loomd restarts
// and is all DEL, CHECK and GC need.
//
// Records are not fsynced: they sit on the ADD path, an fsync costs milliseconds, and the only
// thing it would protect against is losing power, after which no pod of the node is running
// any more. A record that such a crash left unreadable is logged and dropped, and the
// delegates' own GC, which the runtime triggers after a reboot, releases what it described.
type Ledger struct {
	dir string
	log *slog.Logger
	// gen counts the changes this Ledger made to the records, so that a reader that keeps
	// a summary of them (metrics) reads them again only after a change. The process that
	// holds the lock is the only writer, so its count sees every change.
	gen atomic.Uint64
}

// containerIDPattern is the CNI spec's rule for container IDs; it also keeps IDs safe as file
// names.
var containerIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

const recordSuffix = ".json"

// staleTemp is the age at which List takes a temporary file for the leftover of a crash
// rather than a Save in progress.
const staleTemp = time.Minute

// OpenLedger opens (creating if needed) the ledger in dir.
func OpenLedger(dir string, log *slog.Logger) (*Ledger, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ledger dir: %w", err)
	}
	return &Ledger{dir: dir, log: log}, nil
}

// Dir is the directory the ledger lives in.
func (l *Ledger) Dir() string { return l.dir }

func (l *Ledger) path(id ContainerID) (string, error) {
	if len(id) > 256 || !containerIDPattern.MatchString(string(id)) {
		return "", fmt.Errorf("container ID %q is not a valid CNI container ID", id)
	}
	return filepath.Join(l.dir, string(id)+recordSuffix), nil
}

// Load returns the record of a container; ok is false when there is none.
func (l *Ledger) Load(id ContainerID) (r Record, ok bool, err error) {
	p, err := l.path(id)
	if err != nil {
		return Record{}, false, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("read ledger record: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil || r.ContainerID != id {
		l.log.Warn("dropping unreadable ledger record", "containerID", id, "path", p, "error", err)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return Record{}, false, fmt.Errorf("remove unreadable ledger record: %w", err)
		}
		l.gen.Add(1)
		return Record{}, false, nil
	}
	return r, true, nil
}

// Save writes a record atomically.
func (l *Ledger) Save(r Record) error {
	p, err := l.path(r.ContainerID)
	if err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode ledger record: %w", err)
	}
	f, err := os.CreateTemp(l.dir, ".tmp-"+string(r.ContainerID)+"-*")
	if err != nil {
		return fmt.Errorf("write ledger record: %w", err)
	}
	renamed := false
	defer func() {
		if !renamed {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("write ledger record: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write ledger record: %w", err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("write ledger record: %w", err)
	}
	renamed = true
	l.gen.Add(1)
	return nil
}

// Remove deletes a container's record; a missing record is not an error.
func (l *Ledger) Remove(id ContainerID) error {
	p, err := l.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove ledger record: %w", err)
	}
	l.gen.Add(1)
	return nil
}

// List returns every record, ordered by container ID. Leftover temporary files from a crash
// mid-write are removed once they are a minute old.
func (l *Ledger) List() ([]Record, error) {
	des, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("list ledger: %w", err)
	}
	var out []Record
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".tmp-") {
			// A young one belongs to a Save in progress, which a List from another goroutine
			// (metrics, address reconciliation) must not break.
			if info, err := de.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
				os.Remove(filepath.Join(l.dir, name))
			}
			continue
		}
		if !strings.HasSuffix(name, recordSuffix) {
			continue
		}
		r, ok, err := l.Load(ContainerID(strings.TrimSuffix(name, recordSuffix)))
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ContainerID < out[j].ContainerID })
	return out, nil
}

// Generation changes whenever this Ledger saves or removes a record. Two equal values mean
// that List would return the same records, as long as no other process wrote the ledger in
// between: true while the caller holds the lock (see Lock).
func (l *Ledger) Generation() uint64 { return l.gen.Load() }

// Lock takes the ledger's exclusive process lock, waiting up to timeout. loomd holds it for
// its whole life; the loom binary takes it before working on the ledger itself, so the two
// never change the ledger at the same time. The returned func releases it.
func (l *Ledger) Lock(timeout time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(l.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open ledger lock: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock ledger %s: %w", l.dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
