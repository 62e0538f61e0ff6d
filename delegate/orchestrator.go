package delegate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
)

// releaseTimeout bounds a rollback or DEL that runs after the caller's context is gone: a
// runtime that timed out an ADD must not leave half an attachment behind.
const releaseTimeout = 2 * time.Minute

// Orchestrator attaches and detaches pods, recording every step in the Ledger. Calls for one
// container are serialised; calls for different containers run in parallel.
type Orchestrator struct {
	ledger *Ledger
	kinds  map[string]Attachment
	log    *slog.Logger
	now    func() time.Time
	obs    Observer // nil: nobody watches
	gate   Gate     // nil: every container's attachments may be made

	// admitting is held from a Gate's decision until the record it admitted is saved, so
	// that the next decision sees that record.
	admitting sync.Mutex

	mu   sync.Mutex
	busy map[ContainerID]*containerLock
}

// A Gate decides, before anything of a container is recorded or attached, whether its
// attachments may be made beside what the node's other containers have: specs are the
// container's attachments, recorded lists the ledger's records (read only when the gate
// needs them). Add holds one lock of the node from the decision until the admitted record is
// saved, so two containers added at the same moment never both pass on what neither has
// recorded yet. An error is returned by Add as it is.
type Gate interface {
	Admit(pod PodRef, specs []Spec, recorded func() ([]Record, error)) error
}

// SetGate makes Add ask g first. Call it before the first call.
func (o *Orchestrator) SetGate(g Gate) { o.gate = g }

type containerLock struct {
	mu   sync.Mutex
	refs int
}

// NewOrchestrator returns an orchestrator that runs attachments of the given kinds.
func NewOrchestrator(l *Ledger, kinds map[string]Attachment, log *slog.Logger) *Orchestrator {
	return &Orchestrator{ledger: l, kinds: kinds, log: log, now: time.Now, busy: map[ContainerID]*containerLock{}}
}

// The operations an Observer is told of.
const (
	OpAdd    = "ADD"
	OpDel    = "DEL"
	OpCheck  = "CHECK"
	OpGC     = "GC"
	OpStatus = "STATUS"
)

// An Observer is told of every call the orchestrator makes to an Attachment, rollbacks
// included: metrics count them by operation and network type. It is called on the ADD path
// and must be quick.
type Observer interface {
	// AttachmentCalled reports one call: its operation (OpAdd...), the network's Kind and
	// plugin type ("" for a GC, which covers every network of a kind), how long it took and
	// what it returned.
	AttachmentCalled(op, kind, plugin string, took time.Duration, err error)
}

// SetObserver makes obs hear of every call to an Attachment. Call it before the first call.
func (o *Orchestrator) SetObserver(obs Observer) { o.obs = obs }

// observe tells the observer, if any, of a call to an attachment of s that began at start.
func (o *Orchestrator) observe(op string, s *Spec, start time.Time, err error) {
	if o.obs != nil {
		o.obs.AttachmentCalled(op, s.Kind, s.PluginType(), time.Since(start), err)
	}
}

// AttachError reports the attachment that failed and whatever the rollback could not release.
type AttachError struct {
	Network string
	Ifname  string
	Err     error
	// Rollback is nil when every attachment made before the failure was released.
	Rollback error
}

func (e *AttachError) Error() string {
	msg := fmt.Sprintf("attach network %q as interface %s: %v", e.Network, e.Ifname, e.Err)
	if e.Rollback != nil {
		msg += fmt.Sprintf(" (rollback incomplete, the next DEL or GC retries: %v)", e.Rollback)
	}
	return msg
}

func (e *AttachError) Unwrap() error { return e.Err }

// A CommitStep is what must still succeed, once every attachment of a container is made,
// for its ADD to succeed: the pod's rules in place, a result the runtime can read. A step
// that fails undoes whatever it did itself; Add then takes every attachment back.
type CommitStep func(ctx context.Context, outcomes []Outcome) error

// CommitError is Add's error when a commit step failed after every attachment was made.
type CommitError struct {
	Err error
	// Rollback is nil when every attachment was released.
	Rollback error
}

func (e *CommitError) Error() string {
	msg := e.Err.Error()
	if e.Rollback != nil {
		msg += fmt.Sprintf(" (rollback incomplete, the next DEL or GC retries: %v)", e.Rollback)
	}
	return msg
}

func (e *CommitError) Unwrap() error { return e.Err }

// Add attaches specs to a container strictly in order, recording each in the ledger before it
// is attempted, then runs the commit steps in order. The Gate, if any, decides first; what it
// refuses is neither recorded nor attempted, and its error is returned as it is. If an
// attachment fails, those before it are detached in reverse order, the record is removed, and
// the error is an *AttachError naming the failed network and interface; if a commit step
// fails, every attachment is detached and the error is a *CommitError. Add is the one owner
// of an ADD's rollback.
func (o *Orchestrator) Add(ctx context.Context, pod PodRef, id ContainerID, netns string, specs []Spec, steps ...CommitStep) ([]Outcome, error) {
	for _, s := range specs {
		if _, ok := o.kinds[s.Kind]; !ok {
			return nil, fmt.Errorf("attach network %q: unknown attachment kind %q", s.Network, s.Kind)
		}
	}
	defer o.lock(id)()

	// A record for this container means an earlier ADD was never followed by DEL (a runtime
	// retrying after a crash). Release it first so nothing of it leaks.
	if old, ok, err := o.ledger.Load(id); err != nil {
		return nil, err
	} else if ok {
		o.log.Info("releasing attachments of an earlier ADD", "containerID", id, "pod", pod)
		if err := o.release(ctx, old, ""); err != nil {
			return nil, fmt.Errorf("release earlier attachments of container %s: %w", id, err)
		}
	}

	// One record before anything runs marks every attachment as possibly present, so DEL after
	// a crash at any point releases all of them (DEL of one that never ran is harmless), and a
	// second one once all succeeded: two writes per ADD whatever the number of attachments.
	rec := Record{ContainerID: id, Netns: netns, Pod: pod, Created: o.now().UTC()}
	for _, s := range specs {
		rec.Attachments = append(rec.Attachments, Entry{Spec: s, State: StateAdding})
	}
	if err := o.admit(rec); err != nil {
		return nil, err
	}
	outcomes := make([]Outcome, 0, len(specs))
	for i := range rec.Attachments {
		e := &rec.Attachments[i]
		call := Call{Spec: e.Spec, ContainerID: id, Netns: netns, Pod: pod}
		start := time.Now()
		res, err := o.kinds[e.Kind].Add(ctx, call)
		o.observe(OpAdd, &e.Spec, start, err)
		if err == nil {
			e.Result, err = json.Marshal(res)
		}
		if err != nil {
			return nil, o.rollback(ctx, rec, i, &AttachError{Network: e.Network, Ifname: e.Ifname, Err: err})
		}
		if r, ok := o.kinds[e.Kind].(DeviceReporter); ok {
			if e.DeviceInfo, err = r.DeviceInfo(call, res); err != nil {
				return nil, o.rollback(ctx, rec, i, &AttachError{Network: e.Network, Ifname: e.Ifname, Err: fmt.Errorf("device-info: %w", err)})
			}
		}
		e.State = StateAdded
		outcomes = append(outcomes, Outcome{Spec: e.Spec, Result: res, DeviceInfo: e.DeviceInfo})
	}
	last := len(specs) - 1
	for _, s := range specs {
		if len(s.DefaultRoute) == 0 {
			continue
		}
		if err := setDefaultRoute(netns, s.Ifname, s.DefaultRoute); err != nil {
			return nil, o.rollback(ctx, rec, last, &AttachError{Network: s.Network, Ifname: s.Ifname, Err: err})
		}
	}
	if err := o.ledger.Save(rec); err != nil {
		e := rec.Attachments[last]
		return nil, o.rollback(ctx, rec, last, &AttachError{Network: e.Network, Ifname: e.Ifname, Err: fmt.Errorf("record results: %w", err)})
	}
	for _, step := range steps {
		if err := step(ctx, outcomes); err != nil {
			ae := o.rollback(ctx, rec, last, &AttachError{Err: err})
			return nil, &CommitError{Err: err, Rollback: ae.Rollback}
		}
	}
	return outcomes, nil
}

// admit asks the gate, if any, whether rec's attachments may be made, and saves rec when
// they may, both under the admitting lock.
func (o *Orchestrator) admit(rec Record) error {
	if o.gate != nil {
		o.admitting.Lock()
		defer o.admitting.Unlock()
		specs := make([]Spec, len(rec.Attachments))
		for i, e := range rec.Attachments {
			specs[i] = e.Spec
		}
		if err := o.gate.Admit(rec.Pod, specs, o.ledger.List); err != nil {
			return err
		}
	}
	if err := o.ledger.Save(rec); err != nil {
		return fmt.Errorf("record attachments of container %s: %w", rec.ContainerID, err)
	}
	return nil
}

// rollback releases, in reverse order, the attachments of rec up to and including the
// attempted one after a failed ADD, and completes the *AttachError.
func (o *Orchestrator) rollback(ctx context.Context, rec Record, attempted int, ae *AttachError) *AttachError {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	for i := attempted + 1; i < len(rec.Attachments); i++ {
		rec.Attachments[i].State = StatePlanned
	}
	ae.Rollback = o.release(ctx, rec, "")
	return ae
}

// Del detaches everything recorded for a container, in reverse order. It keeps going past a
// failure, succeeds when there is nothing left, and leaves only what could not be released in
// the ledger for the next DEL or GC. When the ledger has no record (lost, or an ADD that never
// reached loomd), fallback — if given — supplies the specs to release; its DELs are harmless
// for attachments that never existed.
func (o *Orchestrator) Del(ctx context.Context, id ContainerID, netns string, fallback func() ([]Spec, PodRef)) error {
	defer o.lock(id)()
	rec, ok, err := o.ledger.Load(id)
	if err != nil {
		return err
	}
	if !ok {
		if fallback == nil {
			return nil
		}
		specs, ref := fallback()
		rec = Record{ContainerID: id, Netns: netns, Pod: ref}
		for _, s := range specs {
			rec.Attachments = append(rec.Attachments, Entry{Spec: s, State: StateAdding})
		}
		if len(rec.Attachments) == 0 {
			return nil
		}
		o.log.Info("no ledger record: releasing the pod's networks as resolved now", "containerID", id, "pod", ref)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	return o.release(ctx, rec, netns)
}

// release runs DEL for every attempted attachment of rec in reverse order and removes the
// record, or keeps in it only the attachments whose DEL failed. netns overrides the recorded
// namespace when the runtime supplies one.
func (o *Orchestrator) release(ctx context.Context, rec Record, netns string) error {
	if netns == "" {
		netns = rec.Netns
	}
	var errs []error
	var kept []Entry
	for i := len(rec.Attachments) - 1; i >= 0; i-- {
		e := rec.Attachments[i]
		if e.State == StatePlanned {
			continue
		}
		if err := o.del(ctx, rec, e, netns); err != nil {
			errs = append(errs, fmt.Errorf("detach network %q interface %s: %w", e.Network, e.Ifname, err))
			kept = append([]Entry{e}, kept...)
		}
	}
	if len(kept) == 0 {
		return o.ledger.Remove(rec.ContainerID)
	}
	rec.Attachments = kept
	if err := o.ledger.Save(rec); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (o *Orchestrator) del(ctx context.Context, rec Record, e Entry, netns string) error {
	att, ok := o.kinds[e.Kind]
	if !ok {
		return fmt.Errorf("unknown attachment kind %q", e.Kind)
	}
	prev, err := decodeResult(e.Result)
	if err != nil {
		// A result we cannot read must not stop the release: DEL without prevResult still
		// releases what the delegate holds.
		o.log.Warn("ignoring unreadable recorded result", "containerID", rec.ContainerID, "network", e.Network, "error", err)
		prev = nil
	}
	start := time.Now()
	err = att.Del(ctx, Call{Spec: e.Spec, ContainerID: rec.ContainerID, Netns: netns, Pod: rec.Pod}, prev)
	o.observe(OpDel, &e.Spec, start, err)
	return err
}

// Check verifies every attachment recorded for a container, not only the default network.
func (o *Orchestrator) Check(ctx context.Context, id ContainerID, netns string) error {
	defer o.lock(id)()
	rec, ok, err := o.ledger.Load(id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("check container %s: no attachments recorded on this node", id)
	}
	if netns == "" {
		netns = rec.Netns
	}
	for _, e := range rec.Attachments {
		if e.State != StateAdded {
			return fmt.Errorf("check network %q interface %s: attachment did not complete (state %s)", e.Network, e.Ifname, e.State)
		}
		prev, err := decodeResult(e.Result)
		if err != nil {
			return fmt.Errorf("check network %q interface %s: %w", e.Network, e.Ifname, err)
		}
		call := Call{Spec: e.Spec, ContainerID: id, Netns: netns, Pod: rec.Pod}
		start := time.Now()
		err = o.kinds[e.Kind].Check(ctx, call, prev)
		o.observe(OpCheck, &e.Spec, start, err)
		if err != nil {
			return fmt.Errorf("check network %q interface %s: %w", e.Network, e.Ifname, err)
		}
	}
	return nil
}

// GC releases every recorded container that valid does not name, then asks every attachment
// kind that can collect garbage to release what neither the ledger nor known networks' live
// attachments hold. known lists networks to collect even when no record mentions them.
func (o *Orchestrator) GC(ctx context.Context, valid map[ContainerID]bool, known []Spec) error {
	recs, err := o.ledger.List()
	if err != nil {
		return err
	}
	var errs []error
	var live []Call
	for _, rec := range recs {
		if valid[rec.ContainerID] {
			for _, e := range rec.Attachments {
				if e.State != StatePlanned {
					live = append(live, Call{Spec: e.Spec, ContainerID: rec.ContainerID, Netns: rec.Netns, Pod: rec.Pod})
				}
			}
			continue
		}
		for _, e := range rec.Attachments {
			known = append(known, e.Spec)
		}
		if err := o.releaseStale(ctx, rec.ContainerID); err != nil {
			errs = append(errs, fmt.Errorf("release stale container %s: %w", rec.ContainerID, err))
		}
	}
	for kind, att := range o.kinds {
		c, ok := att.(Collector)
		if !ok {
			continue
		}
		knownOfKind := slices.DeleteFunc(slices.Clone(known), func(s Spec) bool { return s.Kind != kind })
		liveOfKind := slices.DeleteFunc(slices.Clone(live), func(c Call) bool { return c.Kind != kind })
		start := time.Now()
		gcErr := c.GC(ctx, knownOfKind, liveOfKind)
		o.observe(OpGC, &Spec{Kind: kind}, start, gcErr)
		if gcErr != nil {
			errs = append(errs, fmt.Errorf("collect garbage of %s attachments: %w", kind, gcErr))
		}
	}
	return errors.Join(errs...)
}

func (o *Orchestrator) releaseStale(ctx context.Context, id ContainerID) error {
	defer o.lock(id)()
	rec, ok, err := o.ledger.Load(id)
	if err != nil || !ok {
		return err
	}
	o.log.Info("releasing attachments of a container the runtime no longer lists", "containerID", id, "pod", rec.Pod)
	return o.release(ctx, rec, "")
}

// Status reports whether the network of s is ready to attach pods.
func (o *Orchestrator) Status(ctx context.Context, s Spec) error {
	att, ok := o.kinds[s.Kind]
	if !ok {
		return fmt.Errorf("status of network %q: unknown attachment kind %q", s.Network, s.Kind)
	}
	if r, ok := att.(StatusReporter); ok {
		start := time.Now()
		err := r.Status(ctx, s)
		o.observe(OpStatus, &s, start, err)
		return err
	}
	return nil
}

func (o *Orchestrator) lock(id ContainerID) (unlock func()) {
	o.mu.Lock()
	l := o.busy[id]
	if l == nil {
		l = &containerLock{}
		o.busy[id] = l
	}
	l.refs++
	o.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		o.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(o.busy, id)
		}
		o.mu.Unlock()
	}
}

func decodeResult(b json.RawMessage) (types.Result, error) {
	if len(b) == 0 {
		return nil, nil
	}
	res, err := create.CreateFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("decode recorded result: %w", err)
	}
	return res, nil
}

// ValidContainers reads the containers a CNI GC call names as valid from the call's
// configuration ("cni.dev/valid-attachments", and the spec's earlier misspelling
// "cni.dev/attachments").
func ValidContainers(gcConfig []byte) (map[ContainerID]bool, error) {
	var conf struct {
		Valid []types.GCAttachment `json:"cni.dev/valid-attachments"`
		Old   []types.GCAttachment `json:"cni.dev/attachments"`
	}
	if err := json.Unmarshal(gcConfig, &conf); err != nil {
		return nil, fmt.Errorf("parse GC configuration: %w", err)
	}
	valid := map[ContainerID]bool{}
	for _, a := range append(conf.Valid, conf.Old...) {
		valid[ContainerID(a.ContainerID)] = true
	}
	return valid, nil
}

// Records returns what the ledger holds for every container.
func (o *Orchestrator) Records() ([]Record, error) { return o.ledger.List() }

// Outcomes returns the completed attachments of a record as Add returned them.
func (r Record) Outcomes() ([]Outcome, error) {
	var out []Outcome
	for _, e := range r.Attachments {
		if e.State != StateAdded {
			continue
		}
		res, err := decodeResult(e.Result)
		if err != nil {
			return nil, fmt.Errorf("attachment %q interface %s: %w", e.Network, e.Ifname, err)
		}
		out = append(out, Outcome{Spec: e.Spec, Result: res, DeviceInfo: e.DeviceInfo})
	}
	return out, nil
}
