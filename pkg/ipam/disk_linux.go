package ipam

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Names inside dataDir/<network>/.
const (
	lockName  = "lock"      // flock'ed; created once, never removed
	stateName = "state"     // the State, see state.go
	tempName  = "state.tmp" // the next state, before it is renamed over state
)

// maxStateSize bounds what Load reads: 253 entries of a /24 take about
// 25 KiB, 65,000 of a /16 about 6.5 MiB.
const maxStateSize = 16 << 20

// How often Lock retries a contended flock: starting fast, since a holder
// usually keeps the lock for well under a millisecond plus an fsync.
const (
	lockPollMin = 200 * time.Microsecond
	lockPollMax = 2 * time.Millisecond
)

// DiskStore keeps one network's State in dataDir/<network>/:
//
//	dataDir/            created 0700 if missing
//	  <network>/        created 0700; opened once with O_NOFOLLOW, and every
//	                    file below is reached relative to that descriptor
//	    lock            flock(2)ed for every operation, opened O_NOFOLLOW,
//	                    read-write (read-only where the file system is)
//	    state           the whole State, one compact text file (state.go)
//	    state.tmp       the next state while it is being written
//
// One file for the whole state, rather than host-local's file per address:
// every Allocate must know all addresses in use, which is one read of one
// small file here but a directory scan plus n opens there; and rewriting
// ~25 KiB with one fsync costs no more than creating one file with its own
// fsync. Save writes state.tmp (created O_EXCL after removing any leftover
// of a crash), fsyncs it, renames it over state and fsyncs the directory,
// so a crash leaves either the old or the new state and an allocation
// reported to the runtime survives a power cut. Load refuses a symlink or
// anything but a regular file at state.
//
// A DiskStore is safe for concurrent use by goroutines; the lock excludes
// other DiskStores on the same directory, in this or other processes.
type DiskStore struct {
	dir    string // for messages
	dirFD  int
	lockFD int
	sem    chan struct{} // held from Lock to Unlock, for goroutines sharing this DiskStore
	locked atomic.Bool
	closed atomic.Bool
}

var _ Store = (*DiskStore)(nil)

// OpenDiskStore opens the store of CNI network network under dataDir,
// creating directories and the lock file as needed.
func OpenDiskStore(dataDir, network string) (*DiskStore, error) {
	if err := ValidateName("network name", network); err != nil {
		return nil, err
	}
	if dataDir == "" {
		return nil, errors.New("opening ipam store: empty data directory")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating ipam data directory: %w", err)
	}
	dir := filepath.Join(dataDir, network)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("creating ipam network directory: %w", err)
	}
	dirFD, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening ipam network directory %s: %w", dir, refusedLink(err))
	}
	// Read-write where it can be: on NFS, flock is emulated with a byte-range
	// lock, and an exclusive one needs a file open for writing. Else
	// read-only, which local flock allows, so a store on a file system gone
	// read-only still serves what changes nothing (DEL of an unknown
	// attachment, CHECK, a repeated ADD).
	lockFD, err := openRegular(dirFD, lockName, unix.O_RDWR|unix.O_CREAT, 0o600)
	if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		lockFD, err = openRegular(dirFD, lockName, unix.O_RDONLY|unix.O_CREAT, 0o600)
	}
	if err != nil {
		unix.Close(dirFD)
		return nil, fmt.Errorf("opening ipam lock file %s: %w", filepath.Join(dir, lockName), err)
	}
	s := &DiskStore{dir: dir, dirFD: dirFD, lockFD: lockFD, sem: make(chan struct{}, 1)}
	return s, nil
}

// Dir returns the directory holding the network's files.
func (s *DiskStore) Dir() string { return s.dir }

// refusedLink makes the error of an O_NOFOLLOW open of a symlink say so.
func refusedLink(err error) error {
	if errors.Is(err, unix.ELOOP) {
		return fmt.Errorf("refusing to follow a symlink: %w", err)
	}
	return err
}

// openRegular opens name relative to dirFD without following a symlink and
// fails unless it is a regular file. O_NONBLOCK keeps a planted FIFO from
// blocking the open; it means nothing for regular files.
func openRegular(dirFD int, name string, flags int, perm uint32) (int, error) {
	fd, err := unix.Openat(dirFD, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, perm)
	if err != nil {
		return -1, refusedLink(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("stat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("not a regular file (mode %#o)", st.Mode)
	}
	return fd, nil
}

// Lock takes the store's lock: first from other goroutines using s, then
// the flock from other processes, polling until ctx is done.
func (s *DiskStore) Lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("locking %s: %w", s.dir, err)
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("locking %s: %w", s.dir, ctx.Err())
	}
	if s.closed.Load() {
		<-s.sem
		return fmt.Errorf("locking %s: store closed", s.dir)
	}
	if err := s.flock(ctx); err != nil {
		<-s.sem
		return fmt.Errorf("locking %s: %w", s.dir, err)
	}
	s.locked.Store(true)
	return nil
}

// flock polls a non-blocking flock, since a blocking one cannot be
// interrupted when ctx is done. The wait doubles up to lockPollMax, with
// jitter so that waiting processes do not retry in step.
func (s *DiskStore) flock(ctx context.Context) error {
	wait := lockPollMin
	var timer *time.Timer
	for {
		err := unix.Flock(s.lockFD, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("flock: %w", err)
		}
		d := wait/2 + rand.N(wait/2+1)
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		} else {
			timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		wait = min(2*wait, lockPollMax)
	}
}

// Unlock releases the lock taken by Lock.
func (s *DiskStore) Unlock() error {
	if !s.locked.Swap(false) {
		return fmt.Errorf("unlocking %s: %w", s.dir, ErrNotLocked)
	}
	err := unix.Flock(s.lockFD, unix.LOCK_UN)
	<-s.sem
	if err != nil {
		return fmt.Errorf("unlocking %s: %w", s.dir, err)
	}
	return nil
}

// Load reads the state; no state file yet means an empty State.
func (s *DiskStore) Load() (*State, error) {
	if !s.locked.Load() {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(s.dir, stateName), ErrNotLocked)
	}
	return readState(s.dirFD, s.dir)
}

// ReadDiskState reads the state of network under dataDir without locking
// or creating anything, for STATUS, which must change nothing. Save
// replaces the file by a rename, so a reader sees one whole state.
func ReadDiskState(dataDir, network string) (*State, error) {
	if err := ValidateName("network name", network); err != nil {
		return nil, err
	}
	dir := filepath.Join(dataDir, network)
	dirFD, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		st := NewState()
		st.Missing = true
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening ipam network directory %s: %w", dir, refusedLink(err))
	}
	defer unix.Close(dirFD)
	return readState(dirFD, dir)
}

// readState reads the state file in the directory dirFD (dir, for errors);
// no state file yet means an empty State marked Missing.
func readState(dirFD int, dir string) (*State, error) {
	path := filepath.Join(dir, stateName)
	fd, err := openRegular(dirFD, stateName, unix.O_RDONLY, 0)
	if errors.Is(err, unix.ENOENT) {
		st := NewState()
		st.Missing = true
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > maxStateSize {
		return nil, fmt.Errorf("reading %s: %w: larger than %d bytes", path, ErrCorrupt, maxStateSize)
	}
	st, err := parseState(data)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return st, nil
}

// Save replaces the state atomically and durably.
func (s *DiskStore) Save(st *State) (err error) {
	path := filepath.Join(s.dir, stateName)
	if !s.locked.Load() {
		return fmt.Errorf("writing %s: %w", path, ErrNotLocked)
	}
	data, err := encodeState(st)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := s.writeTemp(data); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(s.dir, tempName), err)
	}
	defer func() {
		if err != nil {
			_ = unix.Unlinkat(s.dirFD, tempName, 0)
		}
	}()
	if err := unix.Renameat(s.dirFD, tempName, s.dirFD, stateName); err != nil {
		return fmt.Errorf("renaming %s into place: %w", tempName, err)
	}
	if err := unix.Fsync(s.dirFD); err != nil {
		return fmt.Errorf("syncing %s: %w", s.dir, err)
	}
	return nil
}

// writeTemp writes data to a fresh tempName and fsyncs it. Only the lock
// holder writes, so one fixed name suffices; a leftover of a crash is
// removed first and the file created O_EXCL, so nothing planted there is
// ever written through.
func (s *DiskStore) writeTemp(data []byte) (err error) {
	if err := unix.Unlinkat(s.dirFD, tempName, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing leftover: %w", err)
	}
	fd, err := unix.Openat(s.dirFD, tempName,
		unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("creating: %w", err)
	}
	f := os.NewFile(uintptr(fd), tempName)
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing: %w", cerr)
		}
		if err != nil {
			_ = unix.Unlinkat(s.dirFD, tempName, 0)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing: %w", err)
	}
	return nil
}

// Close releases the store's descriptors, and with them a lock still held.
// It must not run concurrently with other methods.
func (s *DiskStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.locked.Store(false)
	return errors.Join(unix.Close(s.lockFD), unix.Close(s.dirFD))
}
