// Package sysctl reads and writes kernel parameters as files under
// /proc/sys. It owns nothing but those file reads and writes: no exec of the
// sysctl binary, no policy about which values to set.
//
// Entries under /proc/sys/net belong to the network namespace of the thread
// that opens them, so callers that want another namespace's values run these
// functions inside netns.Do.
package sysctl

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Root is the procfs directory of kernel parameters.
const Root = "/proc/sys"

// Path maps a parameter name to its file. Names use "/" between components
// ("net/ipv4/conf/eth0.5/forwarding"), which keeps interface names with dots
// intact; a name without any "/" is taken in the dotted form
// ("net.ipv4.ip_forward").
func Path(name string) string {
	name = strings.TrimPrefix(name, Root+"/")
	name = strings.TrimPrefix(name, "/")
	if !strings.Contains(name, "/") {
		name = strings.ReplaceAll(name, ".", "/")
	}
	return filepath.Join(Root, name)
}

// Get returns the value of a parameter with surrounding whitespace removed.
func Get(name string) (string, error) {
	b, err := os.ReadFile(Path(name))
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", name, err)
	}
	return string(bytes.TrimSpace(b)), nil
}

// Set writes value to a parameter.
func Set(name, value string) error {
	f, err := os.OpenFile(Path(name), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", name, err)
	}
	_, werr := f.WriteString(value)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, werr)
	}
	if cerr != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, cerr)
	}
	return nil
}

// Ensure sets a parameter to value unless it already has it, and returns the
// previous value (for Restore). Reading first avoids a write, which for some
// parameters (forwarding) has side effects in the kernel even when the
// value does not change.
func Ensure(name, value string) (prev string, err error) {
	prev, err = Get(name)
	if err != nil {
		return "", err
	}
	if prev == value {
		return prev, nil
	}
	return prev, Set(name, value)
}

// Restore writes back a value saved by Ensure; an empty value does nothing.
func Restore(name, prev string) error {
	if prev == "" {
		return nil
	}
	return Set(name, prev)
}
