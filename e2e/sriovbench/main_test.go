package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestRun runs a short benchmark with a fast rescan, to keep the command working.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := options{rounds: 2, interval: 10 * time.Millisecond, vfs: 2, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := run(ctx, o); err != nil {
		t.Fatal(err)
	}
}
