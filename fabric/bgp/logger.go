package bgp

import (
	"context"
	"fmt"
	"log/slog"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger hands GoBGP's log records to loomd's slog logger. GoBGP's Info records
// (every configuration call, every state change) are demoted to Debug: the speaker logs
// the session changes that matter itself.
type gobgpLogger struct {
	log *slog.Logger
}

var _ gobgplog.Logger = gobgpLogger{}

func (l gobgpLogger) Panic(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelError, msg, fields)
	panic("gobgp: " + msg)
}

// Fatal reports a state GoBGP cannot continue from; only cmd/ may exit the process, so
// it panics as Panic does.
func (l gobgpLogger) Fatal(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelError, msg, fields)
	panic("gobgp: " + msg)
}

func (l gobgpLogger) Error(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelError, msg, fields)
}

func (l gobgpLogger) Warn(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelWarn, msg, fields)
}

func (l gobgpLogger) Info(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelDebug, msg, fields)
}

func (l gobgpLogger) Debug(msg string, fields gobgplog.Fields) {
	l.emit(slog.LevelDebug, msg, fields)
}

// SetLevel is ignored: the slog handler decides what is kept.
func (l gobgpLogger) SetLevel(gobgplog.LogLevel) {}

// GetLevel tells GoBGP whether building debug records is worth it.
func (l gobgpLogger) GetLevel() gobgplog.LogLevel {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}

func (l gobgpLogger) emit(level slog.Level, msg string, fields gobgplog.Fields) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, len(fields))
	for k, v := range fields {
		attrs = append(attrs, slog.String(k, fmt.Sprint(v)))
	}
	l.log.LogAttrs(ctx, level, msg, attrs...)
}
