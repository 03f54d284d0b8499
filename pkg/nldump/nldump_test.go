package nldump

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestComplete(t *testing.T) {
	calls := 0
	got, err := Complete("links", func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted // partial: must not be returned
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(got) != 2 || calls != 3 {
		t.Fatalf("Complete = %v, %v after %d calls; want the third, whole dump", got, err, calls)
	}
	_, err = Complete("links", func() ([]int, error) { return []int{1}, netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("always interrupted: err %v, want ErrDumpInterrupted", err)
	}
	boom := errors.New("boom")
	if _, err := Complete("links", func() ([]int, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("other error: %v", err)
	}
}
