// Package ipam hands out pod addresses from the node's leased subnet
// (DESIGN invariant 3): one address per attachment (container ID +
// interface name), the same address again for a repeated request, release
// of an unknown attachment is not an error, and GC frees everything not in
// the runtime's list of valid attachments.
//
// It is split as host-local is: an allocator that does no I/O (allocator.go)
// picks the next free address given the subnet, the addresses in use and the
// last one handed out; a Pool runs each operation as one read-modify-write
// of the whole State under the Store's lock; and the Store is the seam, a
// DiskStore on the node and an in-memory fake in tests.
package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Sentinel errors, for errors.Is.
var (
	// ErrExhausted: the subnet has no free address left.
	ErrExhausted = errors.New("no free address")
	// ErrInvalidName: a container ID, interface name or network name that
	// cannot be stored safely.
	ErrInvalidName = errors.New("invalid name")
	// ErrCorrupt: the stored state does not parse. It is never treated as
	// empty, since that would hand out addresses that are in use.
	ErrCorrupt = errors.New("corrupt ipam state")
	// ErrNotLocked: Load or Save called without holding the store's lock.
	ErrNotLocked = errors.New("ipam store not locked")
	// ErrUnattributed: a LiveFunc found pod interfaces whose attachment it
	// cannot name (a veth on the bridge with no mark). The attachments it
	// returns with it are right but may not be all, so nothing may be taken
	// for gone because it is missing from them.
	ErrUnattributed = errors.New("pod interfaces with no record of their attachment")
)

// Attachment identifies one interface of one container, the key of an
// allocation.
type Attachment struct {
	ContainerID string
	IfName      string
}

func (a Attachment) validate() error {
	if err := ValidateName("container ID", a.ContainerID); err != nil {
		return err
	}
	return ValidateName("interface name", a.IfName)
}

// maxNameLen bounds every name; it is also NAME_MAX, the longest file name.
const maxNameLen = 255

// ValidateName checks a name that ends up in a file name or in the state
// file: it must not be empty, ".", "..", longer than 255 bytes, or contain
// '/', NUL, whitespace or another control character. The CNI spec already
// limits container IDs and network names to [A-Za-z0-9_.-] and Linux
// interface names exclude whitespace and '/', so this refuses nothing a
// conforming runtime sends. kind names the field in the error, e.g.
// "container ID". The error wraps ErrInvalidName.
func ValidateName(kind, s string) error {
	reason := ""
	switch {
	case s == "":
		reason = "is empty"
	case s == "." || s == "..":
		reason = "is not allowed"
	case len(s) > maxNameLen:
		reason = fmt.Sprintf("is %d bytes long, more than %d", len(s), maxNameLen)
	default:
		for i := 0; i < len(s); i++ {
			if c := s[i]; c == '/' {
				reason = "contains '/'"
				break
			} else if c <= ' ' || c == 0x7f {
				reason = fmt.Sprintf("contains control character or space %q", c)
				break
			}
		}
	}
	if reason == "" {
		return nil
	}
	shown := s
	if len(shown) > 64 {
		shown = shown[:64] + "..."
	}
	return fmt.Errorf("%w: %s %q %s", ErrInvalidName, kind, shown, reason)
}

// State is everything a Pool keeps for one network.
type State struct {
	// Last is the address handed out most recently; the next allocation
	// starts after it, so a just-released address is not reused at once.
	// The zero Addr means none yet.
	Last netip.Addr
	// Entries maps each attachment to its address. Addresses are distinct.
	Entries map[Attachment]netip.Addr
	// Missing is set by Load when nothing was ever stored, or the store was
	// wiped: the only moment a Pool adopts the addresses of live pods.
	Missing bool
}

// NewState returns an empty State.
func NewState() *State {
	return &State{Entries: make(map[Attachment]netip.Addr)}
}

// Store persists a State for one network, guarded by a lock that excludes
// other goroutines and other processes. A Pool calls Lock, Load, perhaps
// Save, then Unlock; Load and Save without the lock fail with ErrNotLocked.
type Store interface {
	// Lock blocks until the caller holds the lock or ctx is done.
	Lock(ctx context.Context) error
	Unlock() error
	// Load returns the stored state, an empty one when nothing was stored
	// yet, and an error wrapping ErrCorrupt when the stored state is
	// damaged. The caller owns the returned State.
	Load() (*State, error)
	// Save replaces the stored state atomically: after a crash either the
	// old or the new state is found, never a mix or nothing.
	Save(st *State) error
	Close() error
}
