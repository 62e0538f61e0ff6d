package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// memory is a process's resident set now and at its peak, in MB (10⁶ bytes).
type memory struct{ rss, hwm float64 }

// readMemory reads VmRSS and VmHWM from /proc/PID/status.
func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("read the memory of pid %d: %w", pid, err)
	}
	var m memory
	fields := map[string]*float64{"VmRSS:": &m.rss, "VmHWM:": &m.hwm}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 3 && f[2] == "kB" && fields[f[0]] != nil {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return memory{}, fmt.Errorf("parse %s of pid %d: %w", f[0], pid, err)
			}
			*fields[f[0]] = kb * 1024 / 1e6
		}
	}
	if m.rss == 0 {
		return memory{}, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}

// userHZ is the unit of the start time in /proc/PID/stat: 100 on every Linux architecture
// Loom runs on.
const userHZ = 100

// processStart returns when a process started, to the 10 ms of /proc/PID/stat's starttime,
// which counts from boot on the clock CLOCK_BOOTTIME reads.
func processStart(pid int) (time.Time, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, fmt.Errorf("read the start of pid %d: %w", pid, err)
	}
	now := time.Now()
	var ts unix.Timespec
	if err = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}, err
	}
	// The command name, field 2, is in parentheses and may hold spaces; starttime is field 22.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 20 {
		return time.Time{}, fmt.Errorf("parse /proc/%d/stat: %q", pid, b)
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse the start time in /proc/%d/stat: %w", pid, err)
	}
	age := time.Duration(ts.Nano()) - time.Duration(ticks)*time.Second/userHZ
	return now.Add(-age), nil
}
