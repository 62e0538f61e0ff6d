package sim

import (
	"context"
	"encoding/json"

	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// statusWriter keeps DIR/nodes/NAME/status.json up to date.
type statusWriter struct {
	mu   sync.Mutex
	path string
	st   NodeStatus
}

func (w *statusWriter) update(f func(*NodeStatus)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(&w.st)
	b, _ := json.MarshalIndent(w.st, "", "  ")
	_ = writeFileAtomic(w.path, b, 0o644)
}

func (w *statusWriter) setLoomd(state string, pid int, msg string) {
	w.update(func(st *NodeStatus) {
		if state == LoomdStarting && st.Loomd.State != "" && st.Loomd.State != LoomdHeld {
			st.Loomd.Restarts++
		}
		st.Loomd.State, st.Loomd.PID, st.Loomd.Message, st.Loomd.Since = state, pid, msg, time.Now()
	})
}

// loomdRunner runs loomd in the node, restarts it when it exits unless the hold file
// exists, and reports its state.
type loomdRunner struct {
	argv    []string
	logPath string
	hold    string
	health  string   // "" when loomd serves no /readyz
	env     []string // added to the supervisor's environment
	status  *statusWriter
	log     *slog.Logger
}

// run supervises loomd until the context ends, then stops it. It runs on a thread of its
// own that never serves another goroutine, because loomd's parent-death signal is tied to
// the thread that started it.
func (r *loomdRunner) run(ctx context.Context) {
	runtime.LockOSThread()
	for ctx.Err() == nil {
		if _, err := os.Stat(r.hold); err == nil {
			r.status.setLoomd(LoomdHeld, 0, "held down by "+r.hold)
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		started := time.Now()
		msg := r.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("loomd exited", "reason", msg)
		r.status.setLoomd(LoomdExited, 0, msg)
		if time.Since(started) < 5*time.Second {
			sleep(ctx, time.Second) // crash loop back-off
		}
	}
}

// runOnce starts loomd, reports it ready once it is, and waits for it to exit.
func (r *loomdRunner) runOnce(ctx context.Context) string {
	logf, err := os.OpenFile(r.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err.Error()
	}
	defer logf.Close()
	cmd := exec.Command(r.argv[0], r.argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(r.env) > 0 {
		cmd.Env = append(os.Environ(), r.env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Sprintf("start %s: %v", r.argv[0], err)
	}
	r.status.setLoomd(LoomdStarting, cmd.Process.Pid, "")
	r.log.Info("loomd started", "pid", cmd.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	probe, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	go r.probe(probe, cmd.Process.Pid)
	select {
	case err := <-exited:
		return fmt.Sprintf("loomd exited: %v", err)
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		return "stopped"
	}
}

// probe reports loomd ready once a CNI configuration exists and, unless it serves none,
// its /readyz answers ok.
func (r *loomdRunner) probe(ctx context.Context, pid int) {
	client := &http.Client{Timeout: time.Second}
	for {
		if hasCNIConfig("/etc/cni/net.d") && r.healthy(ctx, client) {
			r.status.setLoomd(LoomdReady, pid, "")
			r.log.Info("loomd ready", "pid", pid)
			return
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return
		}
	}
}

func (r *loomdRunner) healthy(ctx context.Context, client *http.Client) bool {
	return r.health == "" || answersOK(ctx, client, "http://"+r.health+"/readyz")
}

// sleep waits d or until the context ends, and says whether it is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
