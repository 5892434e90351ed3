package delegate

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLayers: no import runs from a lower layer to a higher one. Layers,
// low to high: internal/ (the kernel layer), ipam/, then plugins/ and
// agent/ side by side (the podnet plugin speaks the agent's contract
// packages, agent/nodestate and agent/podreg; the agent imports no
// plugin), lab/ and cmd/ on top.
func TestLayers(t *testing.T) {
	const mod = "github.com/podnet/podnet/"
	forbidden := map[string][]string{
		"internal": {"ipam", "plugins", "agent", "lab", "cmd"},
		"ipam":     {"plugins", "agent", "lab", "cmd"},
		"plugins":  {"lab", "cmd", "agent"},
		"agent":    {"plugins", "lab", "cmd"},
		"lab":      {"cmd"},
	}
	root := filepath.Join("..", "..")
	for top, bad := range forbidden {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, im := range f.Imports {
				p, _ := strconv.Unquote(im.Path.Value)
				rel, ok := strings.CutPrefix(p, mod)
				if !ok {
					continue
				}
				if top == "plugins" && (rel == "agent/nodestate" || rel == "agent/podreg") {
					continue // the agent's contract with the podnet plugin
				}
				for _, b := range bad {
					if rel == b || strings.HasPrefix(rel, b+"/") {
						t.Errorf("%s imports %s: %s/ is below %s/", path, p, top, b)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
