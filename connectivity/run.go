package connectivity

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-cni/loom/policy"
)

// The probe commands, as loomctl names them: `loomctl connectivity probe-serve` runs Serve,
// `loomctl connectivity probe-dial` runs Dial, each on its standard input and output.
const (
	ServeCommand = "probe-serve"
	DialCommand  = "probe-dial"
)

// Pods runs the probe commands inside pods.
type Pods interface {
	// Probe runs `loomctl connectivity command` in pod's network namespace with stdin and
	// stdout wired to it, until it exits or ctx is done. Its error says what the command
	// wrote to its standard error.
	Probe(ctx context.Context, pod policy.PodKey, command string, stdin io.Reader, stdout io.Writer) error
}

// Result is a probe and what its packets did.
type Result struct {
	Probe
	Reached bool
	// Detail says why a probe was not reached: timeout, refused…
	Detail string
}

// Differs reports whether the packets did other than the oracle says.
func (r Result) Differs() bool { return r.Reached != r.Expected.Allowed }

// Options tune a Run.
type Options struct {
	// Timeout is how long a probe waits for its answer.
	Timeout time.Duration
	// Parallel bounds the probes in flight from one pod; Pods bounds the pods probing at once.
	Parallel, Pods int
	// Progress, if set, is told how far the run is, about once a second.
	Progress io.Writer
}

// readyTimeout bounds how long a pod's listeners may take to open.
const readyTimeout = 30 * time.Second

// Run opens listeners in every destination pod, sends every probe from its source pod and
// returns the results in the order of probes. A probe command that fails is an error, not a
// verdict.
func Run(ctx context.Context, pods Pods, probes []Probe, o Options) ([]Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop, err := serve(ctx, pods, listeners(probes))
	defer stop()
	if err != nil {
		return nil, err
	}
	results := make([]Result, len(probes))
	decided := make([]bool, len(probes))
	var done atomic.Int64
	stopProgress := progress(o.Progress, &done, len(probes))
	defer stopProgress()

	batches := map[policy.PodKey][]Target{}
	for i, p := range probes {
		results[i] = Result{Probe: p}
		batches[p.From] = append(batches[p.From], Target{ID: i, Protocol: p.Protocol, Source: p.Source, Address: p.Address, Port: p.Port})
	}
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, max(1, o.Pods))
	var wg sync.WaitGroup
	for _, from := range sortedKeys(batches) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := dial(ctx, pods, from, Batch{Timeout: o.Timeout, Parallel: o.Parallel, Targets: batches[from]}, func(out Outcome) {
				mu.Lock()
				defer mu.Unlock()
				if out.ID < 0 || out.ID >= len(probes) || decided[out.ID] {
					return
				}
				decided[out.ID] = true
				results[out.ID].Reached, results[out.ID].Detail = out.Reached, out.Detail
				done.Add(1)
			})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i, ok := range decided {
		if !ok {
			return nil, fmt.Errorf("probe %s: the probe command in %s gave no outcome", probes[i], probes[i].From)
		}
	}
	return results, nil
}

// listeners is what each destination pod listens on.
func listeners(probes []Probe) map[policy.PodKey]Listen {
	out := map[policy.PodKey]Listen{}
	for _, p := range probes {
		l := out[p.To]
		switch p.Protocol {
		case TCP:
			l.TCP = append(l.TCP, p.Port)
		case UDP:
			l.UDP = append(l.UDP, p.Port)
		}
		out[p.To] = l
	}
	for k, l := range out {
		slices.Sort(l.TCP)
		slices.Sort(l.UDP)
		out[k] = Listen{TCP: slices.Compact(l.TCP), UDP: slices.Compact(l.UDP)}
	}
	return out
}

// serve starts the listeners and returns once all of them are ready. stop ends them and
// waits until they are gone; call it also when serve fails.
func serve(ctx context.Context, pods Pods, ls map[policy.PodKey]Listen) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var inputs []*io.PipeWriter
	stop = func() {
		for _, w := range inputs {
			w.Close()
		}
		cancel()
		wg.Wait()
	}
	ready := make(chan error, len(ls))
	for _, pod := range sortedKeys(ls) {
		if len(ls[pod].TCP)+len(ls[pod].UDP) == 0 {
			continue
		}
		spec, _ := json.Marshal(ls[pod])
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		inputs = append(inputs, inW)
		go inW.Write(append(spec, '\n'))
		var once sync.Once
		report := func(err error) { once.Do(func() { ready <- err }) }
		wg.Go(func() {
			err := pods.Probe(ctx, pod, ServeCommand, inR, outW)
			outW.Close()
			inR.Close()
			report(fmt.Errorf("start the listeners in %s: exited before it was ready: %w", pod, cmp.Or(err, io.ErrUnexpectedEOF)))
		})
		wg.Go(func() {
			sc := bufio.NewScanner(outR)
			if sc.Scan() && sc.Text() == Ready {
				report(nil)
			}
			io.Copy(io.Discard, outR)
		})
	}
	timeout := time.After(readyTimeout)
	for range inputs {
		select {
		case err := <-ready:
			if err != nil {
				return stop, err
			}
		case <-timeout:
			return stop, fmt.Errorf("start the listeners: not ready within %v", readyTimeout)
		case <-ctx.Done():
			return stop, ctx.Err()
		}
	}
	return stop, nil
}

// dial runs one pod's batch and hands each outcome to got as it arrives.
func dial(ctx context.Context, pods Pods, from policy.PodKey, b Batch, got func(Outcome)) error {
	in, err := json.Marshal(b)
	if err != nil {
		return err
	}
	outR, outW := io.Pipe()
	var decodeErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		dec := json.NewDecoder(outR)
		for {
			var o Outcome
			if derr := dec.Decode(&o); derr != nil {
				if !errors.Is(derr, io.EOF) {
					decodeErr = fmt.Errorf("read the outcomes of the probes from %s: %w", from, derr)
				}
				io.Copy(io.Discard, outR)
				return
			}
			got(o)
		}
	})
	err = pods.Probe(ctx, from, DialCommand, bytes.NewReader(in), outW)
	outW.Close()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("probe from %s: %w", from, err)
	}
	return decodeErr
}

// progress writes "probed n/total" to w once a second while n changes, and once more when
// stopped.
func progress(w io.Writer, n *atomic.Int64, total int) (stop func()) {
	if w == nil {
		return func() {}
	}
	fmt.Fprintf(w, "probing %d connections…\n", total)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last := int64(-1)
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if v := n.Load(); v != last {
					fmt.Fprintf(w, "probed %d/%d\n", v, total)
					last = v
				}
			}
		}
	})
	return func() {
		close(quit)
		wg.Wait()
		fmt.Fprintf(w, "probed %d/%d\n", n.Load(), total)
	}
}

func sortedKeys[V any](m map[policy.PodKey]V) []policy.PodKey {
	keys := make([]policy.PodKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b policy.PodKey) int { return cmp.Compare(a.String(), b.String()) })
	return keys
}
