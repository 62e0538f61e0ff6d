package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procRef names one process for as long as it lives: the pid and the start time the kernel
// gives it, so a recycled pid is never mistaken for the process.
type procRef struct {
	PID   int
	Start uint64
}

// procStat reads a process's state letter and start time from /proc/PID/stat.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields count from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22, starttime
	return f[0][0], start, err
}

func refOf(pid int) (procRef, error) {
	_, start, err := procStat(pid)
	return procRef{PID: pid, Start: start}, err
}

// alive says whether the process still runs; a zombie does not.
func (p procRef) alive() bool {
	if p.PID <= 0 {
		return false
	}
	st, start, err := procStat(p.PID)
	return err == nil && start == p.Start && st != 'Z' && st != 'X'
}

func (p procRef) signal(sig syscall.Signal) {
	if p.alive() {
		_ = syscall.Kill(p.PID, sig)
	}
}

func writePidFile(path string, p procRef) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(path, fmt.Appendf(nil, "%d %d\n", p.PID, p.Start), 0o644)
}

func readPidFile(path string) (procRef, error) {
	var p procRef
	b, err := os.ReadFile(path)
	if err != nil {
		return p, err
	}
	_, err = fmt.Sscanf(string(b), "%d %d", &p.PID, &p.Start)
	return p, err
}

// startDetached starts argv in a session of its own (so a terminal's ^C does not reach it)
// with stdin from /dev/null and stdout and stderr appended to logPath, and records it in
// pidFile. A goroutine reaps it should it exit while this process lives.
func startDetached(argv []string, env []string, logPath, pidFile string) (procRef, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return procRef{}, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err = cmd.Start(); err != nil {
		return procRef{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	go func() { _ = cmd.Wait() }()
	ref, err := refOf(cmd.Process.Pid)
	if err != nil {
		return procRef{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	if err := writePidFile(pidFile, ref); err != nil {
		_ = cmd.Process.Kill()
		return procRef{}, err
	}
	return ref, nil
}

// environWithout returns the environment without the variables whose names start with
// one of the prefixes (etcd reads every ETCD_* variable as a flag).
func environWithout(prefixes ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}

// waitGone waits until none of procs is alive, or the context ends.
func waitGone(ctx context.Context, procs []procRef) error {
	for {
		live := 0
		for _, p := range procs {
			if p.alive() {
				live++
			}
		}
		if live == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d processes still running: %w", live, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stopProcs sends SIGTERM, waits up to grace, then SIGKILLs what is left and waits (up to five
// seconds more) for it to go.
func stopProcs(ctx context.Context, procs []procRef, grace time.Duration) error {
	for _, p := range procs {
		p.signal(syscall.SIGTERM)
	}
	graceCtx, cancel := context.WithTimeout(ctx, grace)
	err := waitGone(graceCtx, procs)
	cancel()
	if err == nil {
		return nil
	}
	for _, p := range procs {
		p.signal(syscall.SIGKILL)
	}
	killCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return waitGone(killCtx, procs)
}

// nsInode returns the inode of the namespace a pin or /proc/PID/ns/* file refers to.
func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// procsInNamespaces lists every process whose mount or network namespace is one of inodes.
func procsInNamespaces(inodes map[uint64]bool) []procRef {
	if len(inodes) == 0 {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var procs []procRef
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		for _, ns := range []string{"mnt", "net"} {
			ino, err := nsInode(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
			if err != nil || !inodes[ino] {
				continue
			}
			if ref, err := refOf(pid); err == nil {
				procs = append(procs, ref)
			}
			break
		}
	}
	return procs
}

// isNamespacePin says whether path is a bind mount of a namespace (nsfs) rather than the
// empty file it is mounted on.
func isNamespacePin(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// unmountPin detaches a namespace pin and removes its file; both already gone is fine.
func unmountPin(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
