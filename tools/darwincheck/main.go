// Command darwincheck type-checks Go packages as they build on macOS
// (GOOS=darwin, cgo on) from Linux, where the cgo + Objective-C code of
// github.com/Code-Hex/vz/v3 cannot be compiled. It uses go/types with
// FakeImportC over sources found through a darwin go/build context, so wrong
// names, argument types and return values in calls to vz are caught here;
// what C itself does is not checked (and nothing is run).
//
// Usage: darwincheck [-arch arm64] PACKAGE...
package main

import (
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	arch := flag.String("arch", "arm64", "GOARCH to check for")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: darwincheck [-arch arm64] PACKAGE...")
		os.Exit(2)
	}
	wd, _ := os.Getwd()
	c := NewChecker(*arch)
	failed := 0
	for _, p := range flag.Args() {
		if err := c.Check(p, wd); err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed++
			continue
		}
		fmt.Printf("ok  %s (GOOS=darwin GOARCH=%s, %d packages type-checked)\n", p, *arch, len(c.pkgs))
	}
	if failed > 0 {
		os.Exit(1)
	}
}

// Checker type-checks packages and their dependencies for darwin.
type Checker struct {
	ctxt  build.Context
	fset  *token.FileSet
	sizes types.Sizes
	pkgs  map[string]*types.Package // by directory
	errs  map[string]error
	stack []string
}

// NewChecker returns a checker for GOOS=darwin and arch.
func NewChecker(arch string) *Checker {
	ctxt := build.Default
	ctxt.GOOS = "darwin"
	ctxt.GOARCH = arch
	ctxt.CgoEnabled = true
	return &Checker{
		ctxt:  ctxt,
		fset:  token.NewFileSet(),
		sizes: types.SizesFor("gc", arch),
		pkgs:  map[string]*types.Package{},
		errs:  map[string]error{},
	}
}

// Check type-checks the package at import path or directory p, resolved
// from srcDir, and everything it imports.
func (c *Checker) Check(p, srcDir string) error {
	mode := build.ImportMode(0)
	var bp *build.Package
	var err error
	if strings.HasPrefix(p, ".") || filepath.IsAbs(p) {
		dir := p
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(srcDir, p)
		}
		bp, err = c.ctxt.ImportDir(dir, mode)
	} else {
		bp, err = c.ctxt.Import(p, srcDir, mode)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	_, err = c.load(bp)
	return err
}

// ImportFrom implements types.ImporterFrom.
func (c *Checker) ImportFrom(path, dir string, _ types.ImportMode) (*types.Package, error) {
	if path == "unsafe" {
		return types.Unsafe, nil
	}
	bp, err := c.ctxt.Import(path, dir, 0)
	if err != nil {
		return nil, err
	}
	return c.load(bp)
}

// Import implements types.Importer.
func (c *Checker) Import(path string) (*types.Package, error) {
	wd, _ := os.Getwd()
	return c.ImportFrom(path, wd, 0)
}

func (c *Checker) load(bp *build.Package) (*types.Package, error) {
	if pkg, ok := c.pkgs[bp.Dir]; ok {
		return pkg, nil
	}
	if err, ok := c.errs[bp.Dir]; ok {
		return nil, err
	}
	for _, s := range c.stack {
		if s == bp.Dir {
			return nil, fmt.Errorf("import cycle through %s", bp.ImportPath)
		}
	}
	c.stack = append(c.stack, bp.Dir)
	defer func() { c.stack = c.stack[:len(c.stack)-1] }()

	names := append(append([]string{}, bp.GoFiles...), bp.CgoFiles...)
	sort.Strings(names)
	var files []*ast.File
	for _, n := range names {
		f, err := parser.ParseFile(c.fset, filepath.Join(bp.Dir, n), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	var errs []error
	conf := types.Config{
		Importer:    c,
		FakeImportC: true,
		Sizes:       c.sizes,
		GoVersion:   "",
		Error: func(err error) {
			// Values of faked C types are invalid; what follows from them
			// (conversions, uses) is not an error of the Go code.
			if strings.Contains(err.Error(), "invalid type") {
				return
			}
			if len(errs) < 20 {
				errs = append(errs, err)
			}
		},
	}
	pkg, _ := conf.Check(bp.ImportPath, c.fset, files, nil)
	if len(errs) > 0 {
		name := bp.ImportPath
		if name == "." {
			name = bp.Dir
		}
		err := fmt.Errorf("type errors in %s (GOOS=darwin GOARCH=%s):\n%w", name, c.ctxt.GOARCH, errors.Join(errs...))
		c.errs[bp.Dir] = err
		return nil, err
	}
	c.pkgs[bp.Dir] = pkg
	return pkg, nil
}
