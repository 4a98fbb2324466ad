// Package tarcopy holds the rules both ends of a copy share: where docker
// cp puts a source, and how an untrusted tar stream is written below a
// directory (an os.Root, so no entry lands outside it, also not through a
// symlink an earlier entry made). The agent uses it to copy into a box, the
// host to copy out of one.
package tarcopy

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/libbox/libbox/errdefs"
)

// Contents reports whether a source path names a directory's contents
// (docker cp's SRC/.).
func Contents(p string) bool {
	return p == "." || strings.HasSuffix(p, "/.")
}

// MustBeDir reports whether a destination path, as the user wrote it, must
// be a directory: it ends in "/" or names contents.
func MustBeDir(dest string) bool {
	return strings.HasSuffix(dest, "/") || Contents(dest)
}

// Dest is what exists at a copy's destination.
type Dest int

const (
	Missing Dest = iota
	File
	Dir
)

// Place applies docker cp's rules to a stream whose top entry is top (a
// directory when srcDir; contents when the source was SRC/.) copied to
// dest, where dest is what exists there. With into, entries go below dest
// itself, the top entry renamed to name ("" when the top entry is dest:
// only its contents are written); otherwise they go below dest's parent,
// the top entry renamed to dest's last element. op prefixes errors.
func Place(op, dest string, d Dest, top string, srcDir, contents bool) (into bool, name string, err error) {
	switch d {
	case Dir:
		if contents && srcDir {
			return true, "", nil
		}
		if top == "." {
			return false, "", errdefs.New(errdefs.InvalidArgument, "%s: / goes into a directory only as its contents (/.)", op)
		}
		return true, top, nil
	case File:
		if srcDir {
			return false, "", errdefs.New(errdefs.FailedPrecondition, "%s: cannot copy a directory onto the file %q", op, dest)
		}
		if MustBeDir(dest) {
			return false, "", errdefs.New(errdefs.FailedPrecondition, "%s: %q is not a directory", op, dest)
		}
	default:
		if MustBeDir(dest) && !srcDir {
			return false, "", errdefs.New(errdefs.NotFound, "%s: directory %q does not exist (create it, or drop the trailing /)", op, dest)
		}
	}
	return false, "", nil
}

// Renamer returns the function Extract places entries with: an entry below
// top goes to dir/name/<rest> (dir/<rest> with no name; the top entry
// itself is then skipped). Entries not below top, absolute ones and ones
// with ".." are refused.
func Renamer(dir, top, name string) func(entry string) (string, bool, error) {
	return func(entry string) (string, bool, error) {
		rest, ok := strings.CutPrefix(strings.TrimSuffix(entry, "/"), top)
		if !ok || (rest != "" && rest[0] != '/') || strings.ContainsRune(entry, 0) ||
			slices.Contains(strings.Split(rest, "/"), "..") {
			return "", false, errdefs.New(errdefs.InvalidArgument, "tar entry %q is not below the top entry %q", entry, top)
		}
		if name == "" && rest == "" {
			return "", false, nil
		}
		return path.Join(dir, name, strings.TrimPrefix(rest, "/")), true, nil
	}
}

// Below returns the function Extract places entries with when a stream is
// written as it is below dir. Absolute and empty names and ones with ".."
// are refused.
func Below(dir string) func(entry string) (string, bool, error) {
	return func(entry string) (string, bool, error) {
		if entry == "" || strings.HasPrefix(entry, "/") || strings.ContainsRune(entry, 0) {
			return "", false, errdefs.New(errdefs.InvalidArgument, "tar entry %q: absolute or empty names are not allowed", entry)
		}
		if slices.Contains(strings.Split(entry, "/"), "..") {
			return "", false, errdefs.New(errdefs.InvalidArgument, "tar entry %q escapes the target directory", entry)
		}
		return path.Join(dir, path.Clean(entry)), true, nil
	}
}

// EntryError is a failure to write one entry; Err is os.Root's error.
type EntryError struct {
	Entry string // the name in the stream
	Path  string // where it was being written, relative to the root
	Err   error
}

func (e *EntryError) Error() string { return fmt.Sprintf("%s: %v", e.Entry, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// Extract writes tr's entries (first, when set, then the rest) below root
// where place puts them (a slash path relative to root, or false to skip
// the entry). Parents are created; an existing file or symlink at an
// entry's name is replaced, never written through. Directories get
// dirMode added to their mode (the host adds 0o700 so it can fill them).
// Hard links are made to entries place accepts; devices and fifos are
// skipped. It returns the file bytes written and the entries written.
// Stream errors are InvalidArgument; write errors are *EntryError.
func Extract(root *os.Root, tr *tar.Reader, first *tar.Header, place func(string) (string, bool, error), dirMode fs.FileMode) (int64, int, error) {
	var total int64
	entries := 0
	for {
		h := first
		first = nil
		if h == nil {
			var err error
			if h, err = tr.Next(); err == io.EOF {
				return total, entries, nil
			} else if err != nil {
				return total, entries, errdefs.Wrap(errdefs.InvalidArgument, err, "read tar stream")
			}
		}
		rel, ok, err := place(h.Name)
		if err != nil {
			return total, entries, err
		}
		if !ok {
			continue
		}
		entries++
		link := ""
		if h.Typeflag == tar.TypeLink {
			target, ok, err := place(h.Linkname)
			if err == nil && !ok {
				err = errdefs.New(errdefs.InvalidArgument, "tar entry %q: a hard link to a directory", h.Name)
			}
			if err != nil {
				return total, entries, err
			}
			link = target
		}
		n, err := writeEntry(root, rel, h, tr, link, dirMode)
		total += n
		if err != nil {
			return total, entries, &EntryError{Entry: h.Name, Path: rel, Err: err}
		}
	}
}

// writeEntry writes h at rel; link is a hard link's placed target.
func writeEntry(root *os.Root, rel string, h *tar.Header, r io.Reader, link string, dirMode fs.FileMode) (int64, error) {
	mode := fs.FileMode(h.Mode) & fs.ModePerm
	if h.Typeflag == tar.TypeDir {
		if err := root.MkdirAll(rel, 0o755); err != nil {
			return 0, err
		}
		return 0, root.Chmod(rel, mode|dirMode)
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeSymlink, tar.TypeLink:
	default:
		return 0, nil // devices, fifos and the like are not copied
	}
	if parent := path.Dir(rel); parent != "." {
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return 0, err
		}
	}
	if err := root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err // a directory in the way stays, and says so
	}
	switch h.Typeflag {
	case tar.TypeSymlink:
		return 0, root.Symlink(h.Linkname, rel)
	case tar.TypeLink:
		return 0, root.Link(link, rel)
	}
	f, err := root.OpenFile(rel, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Chmod(rel, mode) // the mode, not the umask's version of it
	}
	return n, err
}
