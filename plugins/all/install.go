package all

import (
	"errors"
	"os"
	"path/filepath"
)

// Install makes dir/<type> -> target for every plugin and returns the links
// made. A relative target is stored as given and so resolves relative to
// dir (`podnet plugins install --copy` links to "podnet": the links stay
// right when dir is seen under another path, e.g. the host's /opt/cni/bin
// mounted at /host/opt/cni/bin in an init container). An existing file of
// that name is replaced atomically (symlink to a temp name, then rename), so
// a runtime calling a plugin mid-install runs either the old or the new
// one, never nothing.
func Install(dir, target string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	resolved := target
	if !filepath.IsAbs(target) {
		resolved = filepath.Join(dir, target)
	}
	var made []string
	var errs []error
	for _, p := range Plugins() {
		link := filepath.Join(dir, p.Type)
		if filepath.Clean(link) == filepath.Clean(resolved) {
			continue // the binary itself answers to its own name ("podnet")
		}
		tmp := link + ".podnet-tmp"
		os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Rename(tmp, link); err != nil {
			os.Remove(tmp)
			errs = append(errs, err)
			continue
		}
		made = append(made, link)
	}
	return made, errors.Join(errs...)
}
