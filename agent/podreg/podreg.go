// Package podreg is the local channel between the podnet CNI plugin and the
// node agent for network policy: the plugin registers a new pod's
// addresses (namespace, name, IPs) before the pod's interface is wired and,
// when the pod's namespace has NetworkPolicies, waits until the agent has
// programmed the pod's policy into the kernel; the agent serves the
// registrations on a unix socket in its state directory and publishes
// there which namespaces have policies (so a plugin can decide, even with
// the agent down, whether a pod may start without it).
//
// It owns the socket <stateDir>/policy.sock (the agent's side) and the file
// <stateDir>/policy-namespaces.json; it touches no kernel object.
package podreg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// SocketName and NamespacesName are the two files in the state directory.
const (
	SocketName     = "policy.sock"
	NamespacesName = "policy-namespaces.json"
)

// SocketPath is the agent's registration socket in stateDir.
func SocketPath(stateDir string) string { return filepath.Join(stateDir, SocketName) }

// NamespacesPath is the file listing the namespaces with policies.
func NamespacesPath(stateDir string) string { return filepath.Join(stateDir, NamespacesName) }

// Registration is one pod attachment, as the plugin knows it at ADD.
type Registration struct {
	ContainerID string       `json:"containerID"`
	IfName      string       `json:"ifName"`
	Namespace   string       `json:"namespace"`
	Name        string       `json:"name"`
	IPs         []netip.Addr `json:"ips"`
	// Wait asks the agent to answer only once the pod's policy is in
	// force in the kernel (or it cannot be); otherwise it answers at once.
	Wait bool `json:"wait"`
}

// Key is "namespace/name".
func (r Registration) Key() string { return r.Namespace + "/" + r.Name }

// Validate checks what the agent needs.
func (r Registration) Validate() error {
	switch {
	case r.ContainerID == "":
		return errors.New("registration: containerID is empty")
	case r.Namespace == "" || r.Name == "":
		return errors.New("registration: namespace and name are required")
	case len(r.IPs) == 0:
		return errors.New("registration: no IPs")
	}
	return nil
}

// Handler is the agent's side.
type Handler interface {
	// Register records r and, when r.Wait, returns once the pod's policy
	// is in force or ctx ends (then an error saying what is missing).
	Register(ctx context.Context, r Registration) error
	// Unregister forgets the attachment (CNI DEL); unknown IDs are fine.
	Unregister(containerID, ifName string)
}

// ErrAgentDown wraps errors reaching the agent: no socket, or nobody
// listening on it.
var ErrAgentDown = errors.New("podnet agent not reachable")

// request and reply are the wire format: one JSON object per line each
// way on a fresh connection (no HTTP: the plugin binary, exec'd for every
// CNI call, must not link and initialise net/http).
type request struct {
	Op  string       `json:"op"` // register | unregister
	Reg Registration `json:"reg"`
}

type reply struct {
	Error string `json:"error,omitempty"`
}

// Register sends r to the agent of stateDir and waits for its answer (ctx
// bounds the wait). Errors reaching the agent wrap ErrAgentDown; a refusal
// carries the agent's reason.
func Register(ctx context.Context, stateDir string, r Registration) error {
	return call(ctx, stateDir, request{Op: "register", Reg: r})
}

// Unregister tells the agent an attachment is gone (best effort: the
// agent also learns it from the datastore).
func Unregister(ctx context.Context, stateDir, containerID, ifName string) error {
	return call(ctx, stateDir, request{Op: "unregister", Reg: Registration{ContainerID: containerID, IfName: ifName}})
}

func call(ctx context.Context, stateDir string, req request) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", SocketPath(stateDir))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("podnet agent did not answer in time: %w", ctx.Err())
		}
		return fmt.Errorf("%w at %s: %v", ErrAgentDown, SocketPath(stateDir), err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fmt.Errorf("%w: send: %v", ErrAgentDown, err)
	}
	var rep reply
	if err := json.NewDecoder(io.LimitReader(conn, 64<<10)).Decode(&rep); err != nil {
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("podnet agent did not answer in time: %w", context.DeadlineExceeded)
		}
		return fmt.Errorf("%w: no answer: %v", ErrAgentDown, err)
	}
	if rep.Error != "" {
		return fmt.Errorf("podnet agent: %s", rep.Error)
	}
	return nil
}

// Serve answers registrations on stateDir's socket until ctx is done. It
// replaces a stale socket file (a previous agent's).
func Serve(ctx context.Context, stateDir string, h Handler) error {
	sock := SocketPath(stateDir)
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		go serveConn(ctx, conn, h)
	}
}

// serveConn answers one request. The handler's wait ends with the
// plugin's: when the plugin gives up and closes, the read side sees it.
func serveConn(ctx context.Context, conn net.Conn, h Handler) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	dec := json.NewDecoder(io.LimitReader(conn, 64<<10))
	var req request
	rep := reply{}
	if err := dec.Decode(&req); err != nil {
		rep.Error = "bad request: " + err.Error()
	} else {
		_ = conn.SetReadDeadline(time.Time{})
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			// The client sends nothing more (a stray byte, such as the
			// request's newline, is skipped): the read fails when it
			// closes (gave up), which cancels the wait.
			var b [64]byte
			for {
				if _, err := conn.Read(b[:]); err != nil {
					cancel()
					return
				}
			}
		}()
		switch req.Op {
		case "register":
			if err := req.Reg.Validate(); err != nil {
				rep.Error = err.Error()
			} else if err := h.Register(rctx, req.Reg); err != nil {
				rep.Error = err.Error()
			}
		case "unregister":
			h.Unregister(req.Reg.ContainerID, req.Reg.IfName)
		default:
			rep.Error = fmt.Sprintf("unknown op %q", req.Op)
		}
	}
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = json.NewEncoder(conn).Encode(rep)
}

// WriteNamespaces records the namespaces that have NetworkPolicies
// (atomically: a plugin never reads half a file).
func WriteNamespaces(stateDir string, namespaces []string) error {
	ns := slices.Clone(namespaces)
	slices.Sort(ns)
	ns = slices.Compact(ns)
	if ns == nil {
		ns = []string{}
	}
	b, err := json.Marshal(ns)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(stateDir, NamespacesName+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), NamespacesPath(stateDir))
}

// HasPolicies says whether namespace had NetworkPolicies when the agent
// last wrote the file. known is false when there is no file (no agent has
// enforced policy on this node yet).
func HasPolicies(stateDir, namespace string) (has, known bool, err error) {
	b, err := os.ReadFile(NamespacesPath(stateDir))
	if errors.Is(err, os.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	var ns []string
	if err := json.Unmarshal(b, &ns); err != nil {
		return false, false, fmt.Errorf("%s: %w", NamespacesPath(stateDir), err)
	}
	_, found := slices.BinarySearch(ns, namespace)
	return found, true, nil
}
