package daemon

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestUnreachableCount(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("other"), 0},
		{fmt.Errorf("route via 10.9.0.31: %w", syscall.ENETUNREACH), 1},
		{errors.Join(fmt.Errorf("a: %w", syscall.ENETUNREACH), errors.New("b"), fmt.Errorf("c: %w", syscall.ENETUNREACH)), 2},
		// The overlay's error joined with Reconcile's join, as reconcileLocked does.
		{errors.Join(errors.New("overlay"), errors.Join(fmt.Errorf("a: %w", syscall.ENETUNREACH), fmt.Errorf("b: %w", syscall.ENETUNREACH), fmt.Errorf("c: %w", syscall.ENETUNREACH))), 3},
	} {
		if got := unreachable(tc.err); got != tc.want {
			t.Errorf("unreachable(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestLeavesOfNestedJoins(t *testing.T) {
	three := errors.Join(errors.New("a"), errors.New("b"), errors.New("c"))
	if got := len(leaves(errors.Join(nil, three))); got != 3 {
		t.Errorf("leaves of a join inside a join = %d, want 3", got)
	}
	if got := len(leaves(errors.Join(errors.New("overlay"), three))); got != 4 {
		t.Errorf("leaves = %d, want 4", got)
	}
}
