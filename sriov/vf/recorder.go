package vf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// maxCalls bounds the calls a Recorder keeps, oldest dropped first, so that a long-running
// simulated cluster does not grow its file without end.
const maxCalls = 1000

// Recorder is a Configurator for nodes without SR-IOV hardware: it checks each State as a
// PF would and keeps it, with a log of the calls, in a JSON file. Every Recorder of the same
// file, in any process, sees the same states: writers take an exclusive flock on a lock file
// beside it and replace the file by rename, so readers never see half of one.
//
// A VF never set reads as Default().
type Recorder struct {
	path string

	mu       sync.Mutex
	failNext error
}

var _ Configurator = (*Recorder)(nil)

// Call is one Set a Recorder accepted.
type Call struct {
	Key
	State State `json:"state"`
}

// recording is the file's content.
type recording struct {
	VFs   []Call `json:"vfs"`
	Calls []Call `json:"calls"`
}

// NewRecorder returns a Recorder that keeps its states in path; the file and its directory
// are created at the first Set.
func NewRecorder(path string) *Recorder {
	return &Recorder{path: path}
}

// State returns what was last set for the VF, or Default().
func (r *Recorder) State(pf string, index int) (State, error) {
	rec, err := r.read()
	if err != nil {
		return State{}, err
	}
	for _, v := range rec.VFs {
		if v.Key == (Key{PF: pf, Index: index}) {
			return v.State, nil
		}
	}
	return Default(), nil
}

// Set validates s as a PF would and records it, unless FailNext armed a failure.
func (r *Recorder) Set(pf string, index int, s State) error {
	key := Key{PF: pf, Index: index}
	r.mu.Lock()
	fail := r.failNext
	r.failNext = nil
	r.mu.Unlock()
	if fail != nil {
		return fmt.Errorf("set %s: %w", key, fail)
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("set %s: %w", key, err)
	}
	return r.update(func(rec *recording) {
		found := false
		for i := range rec.VFs {
			if rec.VFs[i].Key == key {
				rec.VFs[i].State, found = s, true
			}
		}
		if !found {
			rec.VFs = append(rec.VFs, Call{Key: key, State: s})
			sort.Slice(rec.VFs, func(i, j int) bool {
				a, b := rec.VFs[i].Key, rec.VFs[j].Key
				return a.PF < b.PF || a.PF == b.PF && a.Index < b.Index
			})
		}
		rec.Calls = append(rec.Calls, Call{Key: key, State: s})
		if n := len(rec.Calls) - maxCalls; n > 0 {
			rec.Calls = append([]Call(nil), rec.Calls[n:]...)
		}
	})
}

// FailNext makes the next Set of this Recorder (not of others on the same file) fail with
// err, recording nothing.
func (r *Recorder) FailNext(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failNext = err
}

// States returns the state of every VF that was ever set.
func (r *Recorder) States() (map[Key]State, error) {
	rec, err := r.read()
	if err != nil {
		return nil, err
	}
	states := make(map[Key]State, len(rec.VFs))
	for _, v := range rec.VFs {
		states[v.Key] = v.State
	}
	return states, nil
}

// Calls returns the Sets recorded, oldest first (at most the last 1000).
func (r *Recorder) Calls() ([]Call, error) {
	rec, err := r.read()
	if err != nil {
		return nil, err
	}
	return rec.Calls, nil
}

func (r *Recorder) read() (recording, error) {
	var rec recording
	b, err := os.ReadFile(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return rec, fmt.Errorf("read vf states: %w", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("read vf states from %s: %w", r.path, err)
	}
	return rec, nil
}

// update applies change to the file's content under the lock and replaces the file.
func (r *Recorder) update(change func(*recording)) error {
	if err := os.MkdirAll(filepath.Dir(r.path), 0o755); err != nil {
		return fmt.Errorf("record vf states: %w", err)
	}
	lock, err := os.OpenFile(r.path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("record vf states: %w", err)
	}
	defer lock.Close()
	if err = flock(lock, unix.LOCK_EX); err != nil {
		return fmt.Errorf("record vf states: lock %s: %w", lock.Name(), err)
	}
	defer flock(lock, unix.LOCK_UN) //nolint:errcheck // closing the file unlocks it anyway

	rec, err := r.read()
	if err != nil {
		return err
	}
	change(&rec)
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("record vf states: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(r.path), "."+filepath.Base(r.path)+".*")
	if err != nil {
		return fmt.Errorf("record vf states: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), r.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("record vf states in %s: %w", r.path, err)
	}
	return nil
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
