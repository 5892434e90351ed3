package rollback

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoDeferReadsNamedResult enforces the rule issue 17 came with: no
// deferred cleanup may read a named result other than err. A
// "return nil, err" assigns nil to every named result before deferred
// functions run, so a cleanup keyed on (or releasing) such a result finds
// nil: netlinkx.CreateVethPair's removal of a half-made veth pair read its
// named result hostLink and panicked when a concurrent DEL made the ADD
// fail. Key cleanups on a local variable, or on err (which the return sets),
// as `defer undo.Unwind(name, &err)` does. Assigning a named result in a
// defer (clearing it on failure) is fine. Every Go file of the module is
// scanned, tests included.
func TestNoDeferReadsNamedResult(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != root && (strings.HasPrefix(n, ".") || n == "vendor" || n == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		for _, bad := range deferredNamedResultReads(f) {
			rel, _ := filepath.Rel(root, fset.Position(bad.pos).Filename)
			t.Errorf("%s:%d: a deferred cleanup reads named result %q, which a `return nil, err` sets to its zero value before the defer runs: key the cleanup on a local variable (or on err)",
				rel, fset.Position(bad.pos).Line, bad.name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("scanned only %d Go files under %s", files, root)
	}
}

type namedRead struct {
	pos  token.Pos
	name string
}

// deferredNamedResultReads returns, for every function of f with named
// results, the reads of those results (err excepted) inside its defer
// statements.
func deferredNamedResultReads(f *ast.File) []namedRead {
	var out []namedRead
	ast.Inspect(f, func(n ast.Node) bool {
		var ft *ast.FuncType
		var body *ast.BlockStmt
		switch x := n.(type) {
		case *ast.FuncDecl:
			ft, body = x.Type, x.Body
		case *ast.FuncLit:
			ft, body = x.Type, x.Body
		default:
			return true
		}
		if body == nil || ft.Results == nil {
			return true
		}
		named := map[string]bool{}
		for _, r := range ft.Results.List {
			for _, id := range r.Names {
				if id.Name != "_" && id.Name != "err" {
					named[id.Name] = true
				}
			}
		}
		if len(named) == 0 {
			return true
		}
		ast.Inspect(body, func(m ast.Node) bool {
			d, ok := m.(*ast.DeferStmt)
			if !ok {
				return true
			}
			written := map[*ast.Ident]bool{}
			ast.Inspect(d, func(k ast.Node) bool {
				if as, ok := k.(*ast.AssignStmt); ok {
					for _, l := range as.Lhs {
						if id, ok := l.(*ast.Ident); ok {
							written[id] = true
						}
					}
				}
				return true
			})
			ast.Inspect(d, func(k ast.Node) bool {
				if id, ok := k.(*ast.Ident); ok && named[id.Name] && !written[id] {
					out = append(out, namedRead{id.Pos(), id.Name})
				}
				return true
			})
			return true
		})
		return true
	})
	return out
}
