package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestChecksum(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want uint16
	}{
		// RFC 1071's example bytes; the sum folds to 0xddf2.
		{[]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, ^uint16(0xddf2)},
		{[]byte{}, 0xffff},
		{[]byte{0xff}, ^uint16(0xff00)},
	} {
		if got := checksum(tc.in); got != tc.want {
			t.Errorf("checksum(%x) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
	// A message carrying its checksum sums to zero.
	if m := echo(8, 0x1234, 1, []byte("weft-srcip")); checksum(m) != 0 {
		t.Errorf("echo message does not verify: %#04x", checksum(m))
	}
}

func TestServeDial(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "127.0.0.1:0"}, outW, errW); outW.Close(); errW.Close() }()

	buf := make([]byte, 100)
	n, err := errR.Read(buf)
	if err != nil {
		t.Fatalf("reading listening line: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(string(buf[:n])), "listening ")
	if !ok {
		t.Fatalf("listening line %q", buf[:n])
	}
	go io.Copy(io.Discard, errR)
	peers := make(chan string, 1)
	go func() { n, _ := outR.Read(buf); peers <- string(buf[:n]); io.Copy(io.Discard, outR) }()

	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"dial", "-t", "5s", addr}, &stdout, &stderr); code != 0 {
		t.Fatalf("dial exit %d: %s", code, stderr.String())
	}
	if got := strings.TrimSpace(stdout.String()); got != "127.0.0.1" {
		t.Errorf("dial printed %q, want 127.0.0.1", got)
	}
	if got := <-peers; got != "127.0.0.1\n" {
		t.Errorf("serve printed %q, want 127.0.0.1", got)
	}
	if code := run(ctx, []string{"connect", addr}, io.Discard, io.Discard); code != 0 {
		t.Errorf("connect exit %d", code)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on cancel")
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus", "x"}, {"dial"}, {"ping", "-t"}} {
		if code := run(t.Context(), args, io.Discard, io.Discard); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
	if code := run(t.Context(), []string{"ping", "::1"}, io.Discard, io.Discard); code != 1 {
		t.Errorf("ping of an IPv6 address = %d, want 1", code)
	}
}
