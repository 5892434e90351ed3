package all

import (
	"errors"
	"os"
	"path/filepath"
)

// Install makes dir/<type> -> target for every plugin and returns the links
// made. An existing file of that name is replaced atomically (symlink to a
// temp name, then rename), so a runtime calling a plugin mid-install runs
// either the old or the new one, never nothing.
func Install(dir, target string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var made []string
	var errs []error
	for _, p := range Plugins() {
		link := filepath.Join(dir, p.Type)
		if filepath.Clean(link) == filepath.Clean(target) {
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
