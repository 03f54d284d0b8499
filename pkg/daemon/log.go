package daemon

import (
	"io"
	"log/slog"
)

// NewLogger returns the daemon's logger: structured lines on w, as text or
// JSON, at level.
func NewLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
