package agent

import (
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"
	"syscall"

	"github.com/libbox/libbox/errdefs"
)

// maxSymlinks bounds symlink resolution, as the kernel's ELOOP limit does.
const maxSymlinks = 40

// resolveBox turns an absolute box path into a path relative to the box
// root with every symlink resolved the way a process chrooted into the box
// would see it: an absolute target restarts at the box root and ".." never
// climbs above it (/proc/self/root is the box root). The final component
// is followed only when followLast is set. Components that do not exist
// are kept as written, so callers can create them.
//
// The result is then opened through the agent's os.Root, which refuses
// anything that would leave the root if the tree changes in between.
func (a *Agent) resolveBox(p string, followLast bool) (string, error) {
	rel, err := boxRel(p)
	if err != nil {
		return "", err
	}
	return a.resolveParts(p, strings.Split(rel, "/"), followLast)
}

// resolveCopy resolves a path given to a copy the way docker cp resolves
// a container path: a relative path starts at the box's /, and ".." is
// taken after the symlinks before it are resolved and stops at the root.
// A trailing "/" or "/." makes the last component followed.
func (a *Agent) resolveCopy(p string, followLast bool) (string, error) {
	if p == "" {
		return "", errdefs.New(errdefs.InvalidArgument, "path is empty")
	}
	if strings.ContainsRune(p, 0) {
		return "", errdefs.New(errdefs.InvalidArgument, "path %q contains a NUL byte", p)
	}
	return a.resolveParts(p, strings.Split(p, "/"), followLast)
}

// resolveParts resolves the components of box path p from the box root.
func (a *Agent) resolveParts(p string, parts []string, followLast bool) (string, error) {
	cur := "" // resolved so far, relative to the root, no symlinks
	links := 0
	for i := 0; i < len(parts); i++ {
		part := parts[i]
		switch part {
		case "", ".":
			continue
		case "..":
			cur = parentRel(cur)
			continue
		}
		next := path.Join(cur, part)
		last := i == len(parts)-1
		if last && !followLast {
			return orRoot(next), nil
		}
		fi, err := a.froot.Lstat(next)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				// The rest does not exist: keep it as written, but ".."
				// below a missing directory names nothing (as in a chroot).
				if slices.Contains(parts[i+1:], "..") {
					return "", errdefs.Wrap(errdefs.NotFound, err, "path %q", p)
				}
				return orRoot(path.Join(append([]string{next}, parts[i+1:]...)...)), nil
			}
			return "", fsError(p, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		links++
		if links > maxSymlinks {
			return "", errdefs.New(errdefs.InvalidArgument, "path %q: too many levels of symbolic links", p)
		}
		target, err := a.froot.Readlink(next)
		if err != nil {
			return "", fsError(p, err)
		}
		if strings.HasPrefix(target, "/") {
			cur = ""
		}
		parts = append(strings.Split(target, "/"), parts[i+1:]...)
		i = -1
	}
	return orRoot(cur), nil
}

func parentRel(rel string) string {
	if d := path.Dir(rel); d != "." {
		return d
	}
	return ""
}

func orRoot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// boxAbs turns a root-relative path back into an absolute box path.
func boxAbs(rel string) string {
	if rel == "." || rel == "" {
		return "/"
	}
	return "/" + rel
}

// fsError classifies an error of a file-system call on box path p.
func fsError(p string, err error) error {
	var errno syscall.Errno
	errors.As(err, &errno)
	switch {
	case err == nil:
		return nil
	case strings.Contains(err.Error(), "escapes"):
		return errdefs.Wrap(errdefs.InvalidArgument, err, "path %q escapes the box root", p)
	case errno == syscall.EISDIR:
		return errdefs.Wrap(errdefs.FailedPrecondition, err, "path %q is a directory", p)
	case errno == syscall.ENOTDIR:
		return errdefs.Wrap(errdefs.FailedPrecondition, err, "path %q: a parent is not a directory", p)
	case errno == syscall.ENOTEMPTY:
		return errdefs.Wrap(errdefs.FailedPrecondition, err, "directory %q is not empty (remove it recursively)", p)
	case errno == syscall.ELOOP || errno == syscall.ENAMETOOLONG || errno == syscall.EINVAL:
		return errdefs.Wrap(errdefs.InvalidArgument, err, "path %q", p)
	case errors.Is(err, fs.ErrNotExist):
		return errdefs.Wrap(errdefs.NotFound, err, "path %q", p)
	case errors.Is(err, fs.ErrExist):
		return errdefs.Wrap(errdefs.AlreadyExists, err, "path %q", p)
	case errno == syscall.EROFS || errno == syscall.EXDEV || errno == syscall.EBUSY || errno == syscall.ENOSPC ||
		errors.Is(err, fs.ErrPermission):
		return errdefs.Wrap(errdefs.FailedPrecondition, err, "path %q", p)
	}
	return errdefs.Wrap(errdefs.Internal, err, "path %q", p)
}
