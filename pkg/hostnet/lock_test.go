package hostnet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLockNodeWaitsAndAbandons(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	unlock, err := LockNode(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}

	// A waiter whose context ends gives up, and leaves no lock behind.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := LockNode(short, dir); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LockNode while held = %v, want the deadline", err)
	}

	// The lock is held in the kernel: another open file cannot take it.
	probe, err := os.Open(filepath.Join(dir, LockFile))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	if err := unix.Flock(int(probe.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("non-blocking flock while LockNode holds the lock: %v, want EWOULDBLOCK", err)
	}

	// A waiter gets the lock once the holder lets go.
	got := make(chan func(), 1)
	go func() {
		u, err := LockNode(ctx, dir)
		if err != nil {
			t.Error(err)
			u = func() {}
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("second LockNode returned while the first holds the lock")
	case <-time.After(20 * time.Millisecond): // a negative check: it must still be waiting
	}
	unlock()
	var second func()
	select {
	case second = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never got the lock after it was released")
	}
	second()

	// The abandoned waiter released what it may have got.
	deadline, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	again, err := LockNode(deadline, dir)
	if err != nil {
		t.Fatalf("lock left held by an abandoned waiter: %v", err)
	}
	again()
}

// TestLockNodeRefusesSymlink: the node lock is never opened through a
// symlink (which could make a root process create or truncate any file).
func TestLockNodeRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.Symlink(victim, filepath.Join(dir, LockFile)); err != nil {
		t.Fatal(err)
	}
	if unlock, err := LockNode(context.Background(), dir); err == nil {
		unlock()
		t.Fatal("LockNode followed a symlink")
	}
	if _, err := os.Lstat(victim); !os.IsNotExist(err) {
		t.Errorf("the symlink's target was created: %v", err)
	}
}

// TestLockNodeRetriesDoNotPileUp: while another process holds the lock,
// callers that keep retrying with short deadlines (the daemon's loops)
// leave one blocked flock each, not one per retry; once the holder lets go,
// that flock lets the lock go too, so nobody else is kept waiting.
func TestLockNodeRetriesDoNotPileUp(t *testing.T) {
	dir := t.TempDir()
	holder, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	const callers = 3 // the daemon's loops that take the lock
	var wg sync.WaitGroup
	errs := make(chan error, callers*20)
	for range callers {
		wg.Go(func() {
			for range 20 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
				_, err := LockNode(ctx, dir)
				cancel()
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("LockNode while another holds the lock: %v, want the deadline", err)
		}
	}
	// A caller's goroutine may still be counted for a moment after its
	// wg.Done; the blocked flocks stay for good, so poll with a deadline.
	grown := runtime.NumGoroutine() - before
	for deadline := time.Now().Add(2 * time.Second); grown > callers && time.Now().Before(deadline); {
		runtime.Gosched()
		grown = runtime.NumGoroutine() - before
	}
	if grown > callers {
		t.Errorf("%d goroutines more after %d callers gave up 20 waits each, want at most %d (a blocked flock each)", grown, callers, callers)
	}
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	probe, err := os.Open(filepath.Join(dir, LockFile))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	deadline := time.Now().Add(10 * time.Second)
	for unix.Flock(int(probe.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the lock stayed held by a given-up wait after the holder let go")
		}
		time.Sleep(time.Millisecond) // poll with a deadline
	}
	unix.Flock(int(probe.Fd()), unix.LOCK_UN)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unlock, err := LockNode(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
}
