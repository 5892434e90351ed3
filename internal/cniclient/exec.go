package cniclient

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet/internal/netns"
)

// StartIn starts cmd with the child in the network namespace at nsPath
// ("" = the caller's). A new process inherits the namespace of the thread
// that forks it, so the calling goroutine is locked to its thread, switched
// into nsPath for the fork only, and switched back (netns.Do). The caller's
// other threads never change namespace, and the Go runtime does not clone
// new threads from a locked one.
func StartIn(nsPath string, cmd *exec.Cmd) error {
	if nsPath == "" {
		return cmd.Start()
	}
	var started bool
	err := netns.Do(nsPath, func() error {
		if err := cmd.Start(); err != nil {
			return err
		}
		started = true
		return nil
	})
	if err != nil && started {
		// Switching back failed after the child started: it runs in the
		// right namespace, but report the error.
		return fmt.Errorf("start %s in %s: %w", cmd.Path, nsPath, err)
	}
	return err
}

// RunIn is StartIn followed by Wait.
func RunIn(nsPath string, cmd *exec.Cmd) error {
	if err := StartIn(nsPath, cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// NetnsExec is a libcni invoke.Exec that starts every plugin inside the
// network namespace NS (the node's), exactly as RawExec otherwise would:
// same stdin, environment, stdout parsing and error decoding. The plugin
// then creates host-side devices (bridges, veth ends, nftables rules) in NS,
// not in the namespace of the calling process.
type NetnsExec struct {
	NS  string // "" = the caller's namespace
	Raw *invoke.RawExec
	version.PluginDecoder
}

// ExecPlugin runs the plugin. RawExec starts the child from the calling
// goroutine, which netns.Do keeps on a thread inside NS until the plugin
// exits.
func (e *NetnsExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	if e.NS == "" {
		return e.Raw.ExecPlugin(ctx, pluginPath, stdinData, environ)
	}
	var out []byte
	var perr error
	if err := netns.Do(e.NS, func() error {
		out, perr = e.Raw.ExecPlugin(ctx, pluginPath, stdinData, environ)
		return nil
	}); err != nil {
		return nil, err
	}
	return out, perr
}

// FindInPath finds the plugin binary like libcni does.
func (e *NetnsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}
