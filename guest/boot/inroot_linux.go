package boot

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A mount target inside a box's root is a path the image (or a box that
// ran before) wrote, so any of its components may be a symlink. The boot
// resolves such paths as a process chrooted into the root would (an
// absolute link restarts at the root, ".." stops there; the kernel's
// RESOLVE_IN_ROOT guards every lookup) and mounts through the resulting
// file descriptor, never through a path string resolved again. Nothing
// else runs in the box while it boots, so the walk does not race a writer.

// what inRoot creates when the target is missing.
type create int

const (
	noCreate create = iota
	createDir
	createFile
)

// inRoot returns an O_PATH descriptor of target inside root. Symlinks are
// followed inside root, missing components (a link's missing target too)
// are made as directories, and a missing last component as kind says. The
// caller closes the descriptor.
func inRoot(root, target string, kind create) (int, error) {
	rootfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(rootfd)
	if kind == noCreate {
		// Nothing to make: the kernel's walk inside the root is the same
		// walk in one call (the boot looks up some twenty paths this way).
		p := strings.TrimLeft(target, "/")
		if p == "" {
			p = "."
		}
		return resolveIn(rootfd, p)
	}
	parts := strings.Split(target, "/")
	cur := "." // resolved so far, relative to root, free of symlinks
	links := 0
	for i := 0; i < len(parts); i++ {
		part := parts[i]
		switch part {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur) // "." stays "."
			continue
		}
		next := path.Join(cur, part)
		last := !slices.ContainsFunc(parts[i+1:], func(p string) bool { return p != "" && p != "." })
		var st unix.Stat_t
		err := unix.Fstatat(rootfd, next, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			if last && kind == noCreate {
				return -1, err
			}
			err = makeIn(rootfd, cur, part, last && kind == createFile)
			if err == nil {
				err = unix.Fstatat(rootfd, next, &st, unix.AT_SYMLINK_NOFOLLOW)
			}
		}
		if err != nil {
			return -1, fmt.Errorf("/%s: %w", next, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			cur = next
			continue
		}
		if links++; links > 40 {
			return -1, fmt.Errorf("%s: %w", target, unix.ELOOP)
		}
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(rootfd, next, buf)
		if err != nil {
			return -1, fmt.Errorf("/%s: %w", next, err)
		}
		link := string(buf[:n])
		if strings.HasPrefix(link, "/") {
			cur = "."
		}
		parts = append(strings.Split(link, "/"), parts[i+1:]...)
		i = -1
	}
	return resolveIn(rootfd, cur)
}

// OpenInRoot returns an O_PATH descriptor of p looked up inside root as a
// process chrooted into root would (see inRoot; nothing is made). Unlike
// the rest of this package it changes no process state: the agent calls it
// from requests. The caller closes the descriptor.
func OpenInRoot(root, p string) (int, error) {
	return inRoot(root, p, noCreate)
}

// resolveIn opens p below rootfd with every symlink kept inside it.
func resolveIn(rootfd int, p string) (int, error) {
	for try := 0; ; try++ {
		fd, err := unix.Openat2(rootfd, p, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && try < 100 {
			continue // a rename raced the lookup
		}
		return fd, err
	}
}

// makeIn creates name (a directory, or an empty file) in the directory
// parent resolves to below rootfd. mkdirat and O_CREAT|O_EXCL never follow
// a symlink in the last component; an existing name is left as it is.
func makeIn(rootfd int, dir, name string, file bool) error {
	pfd, err := unix.Openat2(rootfd, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if file {
		fd, err := unix.Openat(pfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return err
	}
	if err := unix.Mkdirat(pfd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// fdPath names an open descriptor for mount(2) and friends, which follow
// it to the file it was opened on.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// mountAt mounts onto target inside root (created as kind when missing),
// resolved in the root.
func mountAt(root, target string, kind create, source, fstype string, flags uintptr, data string) error {
	fd, err := inRoot(root, target, kind)
	if err != nil {
		return fmt.Errorf("mount point %s: %w", target, err)
	}
	defer unix.Close(fd)
	return unix.Mount(source, fdPath(fd), fstype, flags, data)
}
