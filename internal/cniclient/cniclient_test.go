package cniclient

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/roottest"
)

func TestDefaultContainerIDIsCNITools(t *testing.T) {
	// cnitool v1.3.1: fmt.Sprintf("cnitool-%x", sha512.Sum512(path)[:10])
	got := DefaultContainerID("/run/netns/a")
	if !strings.HasPrefix(got, "cnitool-") || len(got) != len("cnitool-")+20 {
		t.Errorf("DefaultContainerID = %q", got)
	}
	if got == DefaultContainerID("/run/netns/b") {
		t.Error("different paths give the same ID")
	}
}

func TestParseArgs(t *testing.T) {
	got, err := ParseArgs("IgnoreUnknown=1;K8S_POD_NAME=web")
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "web"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ParseArgs = %v, want %v", got, want)
	}
	for _, bad := range []string{"A", "A=", "=1", "A=1;;B=2"} {
		if _, err := ParseArgs(bad); err == nil {
			t.Errorf("ParseArgs(%q) succeeded", bad)
		}
	}
	if got, err := ParseArgs(""); got != nil || err != nil {
		t.Errorf("ParseArgs(\"\") = %v, %v", got, err)
	}
}

func TestParseCapabilityArgs(t *testing.T) {
	m, err := ParseCapabilityArgs(`{"portMappings":[{"hostPort":80}]}`)
	if err != nil || m["portMappings"] == nil {
		t.Errorf("got %v, %v", m, err)
	}
	if _, err := ParseCapabilityArgs(`[1]`); err == nil {
		t.Error("a JSON array was accepted")
	}
}

func TestParseAttachment(t *testing.T) {
	for in, want := range map[string]types.GCAttachment{
		"abc:net1": {ContainerID: "abc", IfName: "net1"},
		"abc":      {ContainerID: "abc", IfName: "eth0"},
	} {
		got, err := ParseAttachment(in)
		if err != nil || got != want {
			t.Errorf("ParseAttachment(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseAttachment(":eth0"); err == nil {
		t.Error("empty container ID accepted")
	}
}

func TestResolveNetns(t *testing.T) {
	if got, _ := ResolveNetns("pod1"); got != "/run/netns/pod1" {
		t.Errorf("bare name -> %q", got)
	}
	if got, _ := ResolveNetns("/proc/1/ns/net"); got != "/proc/1/ns/net" {
		t.Errorf("path -> %q", got)
	}
	wd, _ := os.Getwd()
	if got, _ := ResolveNetns("./x"); got != filepath.Join(wd, "x") {
		t.Errorf("relative path -> %q", got)
	}
}

// nsInode is the inode identifying the namespace at path.
func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestStartInRunsChildInNamespace(t *testing.T) {
	_, p := roottest.NewNS(t, "cc")
	// Stay on one thread to compare its namespace before and after.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self := nsInode(t, "/proc/thread-self/ns/net")
	cmd := exec.Command("/bin/sh", "-c", "stat -L -c %i /proc/self/ns/net")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := RunIn(p, cmd); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out.String()), fmt.Sprint(nsInode(t, p)); got != want {
		t.Errorf("child netns inode %s, want %s", got, want)
	}
	if nsInode(t, "/proc/thread-self/ns/net") != self {
		t.Error("calling thread left in another namespace")
	}
}

func TestNetnsExecRunsPluginInNamespace(t *testing.T) {
	_, p := roottest.NewNS(t, "cc")
	dir := t.TempDir()
	plugin := filepath.Join(dir, "nsprobe")
	// A "plugin" that reports the namespace it runs in.
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\nstat -L -c %i /proc/self/ns/net\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e := &NetnsExec{NS: p, Raw: &invoke.RawExec{Stderr: os.Stderr}}
	out, err := e.ExecPlugin(context.Background(), plugin, []byte("{}"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), fmt.Sprint(nsInode(t, p)); got != want {
		t.Errorf("plugin netns inode %s, want %s", got, want)
	}
}
