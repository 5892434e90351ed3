// Package probe sends real packets between network namespaces — ICMP echo,
// a TCP connect with an echo, a UDP round trip — so tests, the demo and the
// lab assert delivered traffic, not configuration. Each probe opens its
// socket inside the given namespace (sockets stay bound to the namespace they
// were created in), so no external ping or nc binary is needed.
package probe

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/podnet/podnet/internal/netns"
)

// Ping sends one ICMP echo from inside the namespace at nsPath to dst and
// waits for the matching reply. It returns the round-trip time.
func Ping(nsPath string, dst net.IP, timeout time.Duration) (time.Duration, error) {
	var c *icmp.PacketConn
	v4 := dst.To4() != nil
	err := netns.Do(nsPath, func() error {
		var err error
		if v4 {
			c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		} else {
			c, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("open icmp socket in %s: %w", nsPath, err)
	}
	defer c.Close()

	id := os.Getpid() & 0xffff
	seq := int(time.Now().UnixNano() & 0x7fff)
	var typ icmp.Type = ipv4.ICMPTypeEcho
	proto := 1
	if !v4 {
		typ, proto = ipv6.ICMPTypeEchoRequest, 58
	}
	payload := []byte("podnet-probe")
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	deadline := start.Add(timeout)
	if err := c.SetDeadline(deadline); err != nil {
		return 0, err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst}); err != nil {
		return 0, fmt.Errorf("send echo to %s: %w", dst, err)
	}
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("no echo reply from %s within %s: %w", dst, timeout, err)
		}
		rm, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		echo, ok := rm.Body.(*icmp.Echo)
		if !ok || rm.Type == typ || echo.Seq != seq || string(echo.Data) != string(payload) {
			continue // our own request (raw sockets see them on lo) or someone else's
		}
		if pa, ok := peer.(*net.IPAddr); ok && !pa.IP.Equal(dst) {
			continue
		}
		return time.Since(start), nil
	}
}

// Listener is a TCP echo server and UDP echo server on one port inside a
// namespace, for Connect/UDP probes. Close stops both.
type Listener struct {
	tcp net.Listener
	udp net.PacketConn
}

// Listen starts TCP and UDP echo servers on addr (e.g. "0.0.0.0:7777")
// inside the namespace at nsPath.
func Listen(nsPath, addr string) (*Listener, error) {
	l := &Listener{}
	err := netns.Do(nsPath, func() error {
		var err error
		if l.tcp, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		if l.udp, err = net.ListenPacket("udp", addr); err != nil {
			l.tcp.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s in %s: %w", addr, nsPath, err)
	}
	go func() {
		for {
			conn, err := l.tcp.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 256)
				n, err := conn.Read(buf)
				if err == nil {
					_, _ = conn.Write(append([]byte(conn.RemoteAddr().String()+" "), buf[:n]...))
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, peer, err := l.udp.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = l.udp.WriteTo(append([]byte(peer.String()+" "), buf[:n]...), peer)
		}
	}()
	return l, nil
}

// Close stops the servers.
func (l *Listener) Close() error {
	return errors.Join(l.tcp.Close(), l.udp.Close())
}

// Exchange dials network ("tcp" or "udp") addr from inside nsPath, sends a
// token and returns the echo server's reply, which starts with the source
// address the server saw (so callers can check for or against NAT).
func Exchange(nsPath, network, addr string, timeout time.Duration) (seenFrom string, err error) {
	var conn net.Conn
	err = netns.Do(nsPath, func() error {
		var err error
		conn, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("%s dial %s from %s: %w", network, addr, nsPath, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	token := fmt.Sprintf("podnet-%d", time.Now().UnixNano())
	if _, err := conn.Write([]byte(token)); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return "", fmt.Errorf("%s no reply from %s: %w", network, addr, err)
	}
	var from, got string
	if _, err := fmt.Sscan(string(buf[:n]), &from, &got); err != nil || got != token {
		return "", fmt.Errorf("%s reply from %s garbled: %q", network, addr, buf[:n])
	}
	host, _, _ := net.SplitHostPort(from)
	return host, nil
}
