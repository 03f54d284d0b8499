// Command srcip is the probe the integration tests and the demo run inside
// network namespaces, so that neither needs ping, curl or nc installed.
//
//	srcip serve ADDR            listen on TCP ADDR (e.g. 172.7.22.2:8080, :0);
//	                            print "listening <addr>" on stderr, then one
//	                            line per connection on stdout: the peer's IP.
//	                            Each peer is also sent its IP and a newline.
//	srcip dial [-t 5s] ADDR     connect to a srcip server and print the source
//	                            IP the server saw (after any NAT).
//	srcip connect [-t 5s] ADDR  open and close a TCP connection (any server).
//	srcip ping [-t 1s] IP       send one ICMP echo request and wait for the
//	                            reply (needs root: a raw socket).
//
// Exit status is 0 on success, 1 on failure, 2 on bad usage.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = "usage: srcip serve ADDR | dial [-t DUR] ADDR | connect [-t DUR] ADDR | ping [-t DUR] IP | http [-t DUR] URL"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet("srcip "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defTimeout := 5 * time.Second
	if cmd == "ping" {
		defTimeout = time.Second
	}
	timeout := fs.Duration("t", defTimeout, "timeout")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	target := fs.Arg(0)
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, target, stdout, stderr)
	case "dial":
		var ip string
		if ip, err = dial(ctx, target, *timeout); err == nil {
			fmt.Fprintln(stdout, ip)
		}
	case "connect":
		err = connect(ctx, target, *timeout)
	case "ping":
		err = ping(ctx, target, *timeout)
	case "http":
		var code int
		if code, err = httpGet(ctx, target, *timeout); err == nil {
			fmt.Fprintln(stdout, code)
		}
	default:
		fmt.Fprintln(stderr, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "srcip %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// serve accepts connections until ctx is done, reporting each peer's IP.
func serve(ctx context.Context, addr string, stdout, stderr io.Writer) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	fmt.Fprintf(stderr, "listening %s\n", ln.Addr())
	out := bufio.NewWriter(stdout)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accepting: %w", err)
		}
		peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		fmt.Fprintln(out, peer)
		out.Flush()
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintln(c, peer)
		c.Close()
	}
}

// dial connects to a srcip server and returns the source IP it saw.
func dial(ctx context.Context, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("dialing %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading reply from %s: %w", addr, err)
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(line))
	if err != nil {
		return "", fmt.Errorf("reply from %s is not an IP: %q", addr, line)
	}
	return ip.String(), nil
}

// connect opens and closes one TCP connection.
func connect(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", addr, err)
	}
	return c.Close()
}

// ping sends one ICMPv4 echo request over a raw socket and waits for the
// matching reply.
func ping(ctx context.Context, target string, timeout time.Duration) error {
	dst, err := netip.ParseAddr(target)
	if err != nil || !dst.Is4() {
		return fmt.Errorf("ping wants an IPv4 address, got %q", target)
	}
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("opening raw ICMP socket: %w", err)
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	c.SetDeadline(deadline)

	var idb [2]byte
	rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	const seq = 1
	payload := []byte("weft-srcip")
	req := echo(8, id, seq, payload)
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("sending echo request to %s: %w", dst, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("no echo reply from %s within %s", dst, timeout)
			}
			return fmt.Errorf("reading echo reply: %w", err)
		}
		src, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		m := buf[:n]
		if src.Unmap() != dst || len(m) < 8 || m[0] != 0 {
			continue
		}
		if binary.BigEndian.Uint16(m[4:]) == id && binary.BigEndian.Uint16(m[6:]) == seq &&
			bytes.Equal(m[8:], payload) {
			return nil
		}
	}
}

// echo builds an ICMP echo message of the given type.
func echo(typ byte, id, seq uint16, payload []byte) []byte {
	m := make([]byte, 8+len(payload))
	m[0] = typ
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], payload)
	binary.BigEndian.PutUint16(m[2:], checksum(m))
	return m
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// httpGet fetches url and returns the status code (the body is discarded).
func httpGet(ctx context.Context, url string, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}
