package hostnet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// LockFile is the node lock's name, beside the subnet file: every process
// that changes the node's bridge, routes or rules (plugin calls and the
// daemon) holds it, so multi-step iptables repairs never interleave.
const LockFile = "weft.lock"

// LockNode takes the node lock in dir, waiting until ctx is done.
func LockNode(ctx context.Context, dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	path := filepath.Join(dir, LockFile)
	for {
		w := takeAbandoned(path)
		if w == nil {
			fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
			if err != nil {
				return nil, fmt.Errorf("opening node lock %s: %w", path, err)
			}
			if w, err = startFlock(fd, path); err != nil {
				return nil, fmt.Errorf("waiting for node lock %s: %w", path, err)
			}
		}
		if err := w.wait(ctx, path); err != nil {
			return nil, fmt.Errorf("waiting for node lock %s: %w", path, err)
		}
		if samePath(w.fd, path) {
			return func() { unix.Close(w.fd) }, nil
		}
		// The lock file was removed and made again while we waited (a
		// kept wait may be old): ours locks nothing others see.
		unix.Close(w.fd)
	}
}

// samePath reports whether fd is the file at path now.
func samePath(fd int, path string) bool {
	var open, named unix.Stat_t
	return unix.Fstat(fd, &open) == nil && unix.Lstat(path, &named) == nil &&
		open.Dev == named.Dev && open.Ino == named.Ino
}

// A waiter is one flock on its own fd. A blocking flock wakes the moment
// the holder releases (polling would add up to the poll interval to every
// contended ADD); it runs in a goroutine because it cannot be interrupted.
type waiter struct {
	fd  int
	got chan error // the flock's outcome; nil for one got at once
}

// startFlock takes the lock on fd if it is free, else starts a blocking
// flock in a goroutine. When that flock returns for a waiter nobody waits
// for any more (abandoned), it lets the lock go at once.
func startFlock(fd int, path string) (*waiter, error) {
	err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return &waiter{fd: fd}, nil
	}
	if err != unix.EWOULDBLOCK && err != unix.EINTR {
		unix.Close(fd)
		return nil, err
	}
	w := &waiter{fd: fd, got: make(chan error, 1)}
	go func() {
		for {
			err := unix.Flock(fd, unix.LOCK_EX)
			if err == unix.EINTR {
				continue
			}
			abandonedMu.Lock()
			defer abandonedMu.Unlock()
			if i := slices.Index(abandoned[path], w); i >= 0 {
				dropAbandoned(path, i)
				unix.Close(fd)
				return
			}
			w.got <- err
			return
		}
	}()
	return w, nil
}

// wait waits for the flock until ctx is done. A wait given up is kept for
// the next LockNode of the same path in this process (the daemon's loops
// retry every few seconds) instead of starting another flock, so a holder
// that hangs costs each concurrent caller one blocked flock, not one more
// per retry.
func (w *waiter) wait(ctx context.Context, path string) error {
	if w.got == nil {
		return nil
	}
	select {
	case err := <-w.got:
		if err != nil {
			unix.Close(w.fd)
		}
		return err
	case <-ctx.Done():
		abandon(path, w)
		return ctx.Err()
	}
}

var (
	abandonedMu sync.Mutex
	abandoned   = map[string][]*waiter{} // by lock path: flocks still blocked that nobody waits for
)

func takeAbandoned(path string) *waiter {
	abandonedMu.Lock()
	defer abandonedMu.Unlock()
	ws := abandoned[path]
	if len(ws) == 0 {
		return nil
	}
	w := ws[len(ws)-1]
	dropAbandoned(path, len(ws)-1)
	return w
}

// dropAbandoned removes the i-th kept waiter of path; abandonedMu is held.
func dropAbandoned(path string, i int) {
	if ws := slices.Delete(abandoned[path], i, i+1); len(ws) > 0 {
		abandoned[path] = ws
	} else {
		delete(abandoned, path)
	}
}

// abandon keeps w for the next LockNode of path; a flock that returned
// meanwhile is let go now.
func abandon(path string, w *waiter) {
	abandonedMu.Lock()
	defer abandonedMu.Unlock()
	select {
	case <-w.got:
		unix.Close(w.fd)
	default:
		abandoned[path] = append(abandoned[path], w)
	}
}
