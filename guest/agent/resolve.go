package agent

import (
	"bufio"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/guest/boot"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// boxRel turns an absolute box path into a path relative to the box root,
// rejecting relative paths and ".." components.
func boxRel(p string) (string, error) {
	if p == "" || !strings.HasPrefix(p, "/") {
		return "", errdefs.New(errdefs.InvalidArgument, "path %q must be absolute", p)
	}
	if strings.ContainsRune(p, 0) {
		return "", errdefs.New(errdefs.InvalidArgument, "path %q contains a NUL byte", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", errdefs.New(errdefs.InvalidArgument, "path %q must not contain '..'", p)
		}
	}
	rel := strings.TrimPrefix(path.Clean(p), "/")
	if rel == "" {
		rel = "."
	}
	return rel, nil
}

// resolveIn follows p inside root the way a process chrooted there would:
// absolute symlinks restart at root and ".." never leaves it. It returns
// the agent's path of the result and its Stat.
//
// When root is "/" (a sandbox agent after pivot_root) the kernel's own
// lookup already is that walk: one stat. The path returned is then p
// cleaned, symlinks left in: it names the same file. Under another root
// (a VM agent's /mnt/root) the kernel walks inside the root in one call
// (boot.OpenInRoot, openat2 RESOLVE_IN_ROOT), which a box process that
// swaps a directory for a symlink meanwhile cannot lead out of it.
func resolveIn(root, p string) (string, os.FileInfo, error) {
	if root == "/" {
		full := path.Clean("/" + p)
		fi, err := os.Stat(full)
		return full, fi, err
	}
	// Cleaned first, as on the fast path: ".." after a symlink is taken
	// lexically on both.
	fd, err := boot.OpenInRoot(root, path.Clean("/"+p))
	if err != nil {
		return "", nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	defer syscall.Close(fd)
	proc := "/proc/self/fd/" + strconv.Itoa(fd)
	full, err := os.Readlink(proc) // the file's path, as the agent sees it
	if err != nil {
		return "", nil, err
	}
	fi, err := os.Stat(proc)
	return full, fi, err
}

// lookPath finds the executable for name as the box would, returning the
// path to exec as seen from inside the box.
func lookPath(root, name, dir, pathEnv string) (string, error) {
	if name == "" {
		return "", errdefs.New(errdefs.InvalidArgument, "empty command")
	}
	check := func(p string) error {
		_, fi, err := resolveIn(root, p)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return syscall.EISDIR
		}
		if fi.Mode()&0o111 == 0 {
			return syscall.EACCES
		}
		return nil
	}
	if strings.Contains(name, "/") {
		p := name
		if !strings.HasPrefix(p, "/") {
			p = path.Join(dir, p)
		}
		if err := check(p); err != nil {
			return "", execError(name, err)
		}
		return p, nil
	}
	if pathEnv == "" {
		pathEnv = defaultPath
	}
	var firstErr error
	for _, d := range strings.Split(pathEnv, ":") {
		if d == "" {
			d = "."
		}
		if !strings.HasPrefix(d, "/") {
			d = path.Join(dir, d)
		}
		p := path.Join(d, name)
		err := check(p)
		if err == nil {
			return p, nil
		}
		if firstErr == nil && !os.IsNotExist(err) && err != syscall.ENOTDIR {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", execError(name, firstErr)
	}
	return "", withReason(agentpb.Exit_NOT_FOUND, errdefs.New(errdefs.NotFound, "command %q not found in PATH (%s) of the box", name, pathEnv))
}

// execError classifies why the command cannot run, as a shell would: 127
// (NOT_FOUND) when it is missing, 126 (NOT_EXECUTABLE) for the rest.
func execError(name string, err error) error {
	switch {
	case os.IsNotExist(err):
		return withReason(agentpb.Exit_NOT_FOUND, errdefs.New(errdefs.NotFound, "command %q not found in the box", name))
	case err == syscall.EISDIR:
		return withReason(agentpb.Exit_NOT_EXECUTABLE, errdefs.New(errdefs.InvalidArgument, "command %q is a directory", name))
	case os.IsPermission(err) || err == syscall.EACCES:
		return withReason(agentpb.Exit_NOT_EXECUTABLE, errdefs.New(errdefs.InvalidArgument, "command %q is not executable", name))
	}
	return withReason(agentpb.Exit_NOT_EXECUTABLE, errdefs.Wrap(errdefs.InvalidArgument, err, "command %q", name))
}

// user is a resolved box user.
type user struct {
	uid, gid uint32
	groups   []uint32
	name     string
	home     string
}

// lookupUser resolves "", "name", "uid", "uid:gid", "name:group" against
// the box's /etc/passwd and /etc/group.
func lookupUser(root, spec string) (*user, error) {
	if spec == "" {
		spec = "0"
	}
	uspec, gspec, hasGroup := strings.Cut(spec, ":")
	passwd := readColonFile(root, "/etc/passwd")
	u := &user{home: "/"}
	found := false
	if n, err := strconv.ParseUint(uspec, 10, 32); err == nil {
		u.uid = uint32(n)
		for _, f := range passwd {
			if len(f) >= 6 && f[2] == uspec {
				u.name, u.gid, u.home = f[0], atou(f[3]), f[5]
				found = true
				break
			}
		}
		if !found && u.uid == 0 {
			u.name, u.home = "root", "/root"
		}
	} else {
		for _, f := range passwd {
			if len(f) >= 6 && f[0] == uspec {
				u.name, u.uid, u.gid, u.home = f[0], atou(f[2]), atou(f[3]), f[5]
				found = true
				break
			}
		}
		if !found {
			return nil, errdefs.New(errdefs.InvalidArgument, "unknown user %q: not in /etc/passwd of the box (use a name from it or uid[:gid])", uspec)
		}
	}
	groups := readColonFile(root, "/etc/group")
	if hasGroup {
		if n, err := strconv.ParseUint(gspec, 10, 32); err == nil {
			u.gid = uint32(n)
		} else {
			ok := false
			for _, f := range groups {
				if len(f) >= 3 && f[0] == gspec {
					u.gid, ok = atou(f[2]), true
					break
				}
			}
			if !ok {
				return nil, errdefs.New(errdefs.InvalidArgument, "unknown group %q: not in /etc/group of the box", gspec)
			}
		}
	}
	if u.name != "" {
		for _, f := range groups {
			if len(f) >= 4 && f[3] != "" {
				for _, m := range strings.Split(f[3], ",") {
					if m == u.name {
						u.groups = append(u.groups, atou(f[2]))
					}
				}
			}
		}
	}
	if u.home == "" {
		u.home = "/"
	}
	return u, nil
}

func atou(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}

// colonCache holds parsed /etc/passwd and /etc/group files, keyed by path
// and invalidated by size and mtime.
var colonCache sync.Map // string -> *colonEntry

type colonEntry struct {
	size  int64
	mtime time.Time
	rows  [][]string
}

func readColonFile(root, p string) [][]string {
	full, fi, err := resolveIn(root, p)
	if err != nil {
		return nil
	}
	if v, ok := colonCache.Load(full); ok {
		e := v.(*colonEntry)
		if e.size == fi.Size() && e.mtime.Equal(fi.ModTime()) {
			return e.rows
		}
	}
	rows := parseColonFile(full)
	colonCache.Store(full, &colonEntry{size: fi.Size(), mtime: fi.ModTime(), rows: rows})
	return rows
}

func parseColonFile(full string) [][]string {
	f, err := os.Open(full)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}

// buildEnv returns the default environment overridden by req, validated.
func buildEnv(u *user, tty bool, hostname string, req []string) ([]string, error) {
	env := map[string]string{
		"PATH": defaultPath,
		"HOME": u.home,
	}
	if u.name != "" {
		env["USER"] = u.name
		env["LOGNAME"] = u.name
	}
	if hostname != "" {
		env["HOSTNAME"] = hostname
	}
	if tty {
		env["TERM"] = "xterm"
	}
	order := []string{"PATH", "HOME", "USER", "LOGNAME", "HOSTNAME", "TERM"}
	for _, kv := range req {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, errdefs.New(errdefs.InvalidArgument, "environment entry %q: want KEY=VALUE", truncate(kv, 64))
		}
		if strings.ContainsRune(kv, 0) {
			return nil, errdefs.New(errdefs.InvalidArgument, "environment entry %q contains a NUL byte", truncate(k, 64))
		}
		if _, seen := env[k]; !seen {
			order = append(order, k)
		}
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for _, k := range order {
		if v, ok := env[k]; ok {
			out = append(out, k+"="+v)
			delete(env, k)
		}
	}
	return out, nil
}

func envGet(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
