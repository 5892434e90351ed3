package main

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LibSearchPath is where the dynamic loader of a Debian amd64 host looks
// for a DT_NEEDED library that no RUNPATH names (its built-in multiarch
// default path, without /etc/ld.so.cache): the order libraries are
// resolved in here.
var LibSearchPath = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// ELFDeps is what a dynamically linked program needs to run: its program
// interpreter (the dynamic loader, PT_INTERP) and every shared library it
// loads, recursively, by DT_NEEDED name (soname) -> host path.
type ELFDeps struct {
	Interp string
	Libs   map[string]string
}

// Static reports whether the program needs nothing (no PT_INTERP).
func (d ELFDeps) Static() bool { return d.Interp == "" && len(d.Libs) == 0 }

// ResolveELF finds what the ELF program at prog needs, the way the loader
// would: each DT_NEEDED name is looked up in the object's DT_RUNPATH (or
// DT_RPATH) directories, then in search; a candidate of another ELF class
// or machine is skipped, as the loader does. Pure Go (debug/elf), no ldd:
// the program is never run.
func ResolveELF(prog string, search []string) (ELFDeps, error) {
	d := ELFDeps{Libs: map[string]string{}}
	f, err := elf.Open(prog)
	if err != nil {
		return d, err
	}
	class, machine := f.Class, f.Machine
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			f.Close()
			return d, fmt.Errorf("%s: PT_INTERP: %w", prog, err)
		}
		d.Interp = strings.TrimRight(string(b), "\x00")
	}
	f.Close()
	queue := []string{prog}
	for len(queue) > 0 {
		obj := queue[0]
		queue = queue[1:]
		needed, runpath, err := dynInfo(obj)
		if err != nil {
			return d, err
		}
		for _, n := range needed {
			if _, ok := d.Libs[n]; ok {
				continue
			}
			p, err := findLib(n, append(runpath, search...), class, machine)
			if err != nil {
				return d, fmt.Errorf("%s (needed by %s): %w", n, obj, err)
			}
			d.Libs[n] = p
			queue = append(queue, p)
		}
	}
	return d, nil
}

// dynInfo returns an object's DT_NEEDED names and its RUNPATH (RPATH when
// there is no RUNPATH) directories with $ORIGIN expanded.
func dynInfo(obj string) (needed, runpath []string, err error) {
	f, err := elf.Open(obj)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if needed, err = f.ImportedLibraries(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", obj, err)
	}
	rp, _ := f.DynString(elf.DT_RUNPATH)
	if len(rp) == 0 {
		rp, _ = f.DynString(elf.DT_RPATH)
	}
	origin := filepath.Dir(obj)
	for _, s := range rp {
		for _, dir := range strings.Split(s, ":") {
			dir = strings.NewReplacer("${ORIGIN}", origin, "$ORIGIN", origin).Replace(dir)
			if dir != "" {
				runpath = append(runpath, dir)
			}
		}
	}
	return needed, runpath, nil
}

// findLib is the first dirs/name that is an ELF object of class and machine.
func findLib(name string, dirs []string, class elf.Class, machine elf.Machine) (string, error) {
	for _, dir := range dirs {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		ok := f.Class == class && f.Machine == machine
		f.Close()
		if ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %s", strings.Join(dirs, ":"))
}
