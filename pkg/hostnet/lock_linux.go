package hostnet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

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
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening node lock %s: %w", path, err)
	}
	if err := waitFlock(ctx, fd); err != nil {
		return nil, fmt.Errorf("waiting for node lock %s: %w", path, err)
	}
	return func() { unix.Close(fd) }, nil
}

// waitFlock takes an exclusive flock on fd. A blocking flock wakes the
// moment the holder releases (polling would add up to the poll interval to
// every contended ADD); it runs in a goroutine because it cannot be
// interrupted. If ctx ends first, fd is closed once that flock returns,
// which also releases the lock if it was got after all.
func waitFlock(ctx context.Context, fd int) error {
	err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err != unix.EWOULDBLOCK && err != unix.EINTR {
		if err != nil {
			unix.Close(fd)
		}
		return err
	}
	got := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(fd, unix.LOCK_EX)
			if err != unix.EINTR {
				got <- err
				return
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			unix.Close(fd)
		}
		return err
	case <-ctx.Done():
		go func() {
			<-got
			unix.Close(fd)
		}()
		return ctx.Err()
	}
}
