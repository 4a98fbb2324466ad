package bridge

// The JSON option bags and requests of the C ABI (documented in
// include/libbox.h), decoded strictly: unknown fields, wrong types and
// trailing data are InvalidArgument. Each schema has one function turning
// it into the libbox value it stands for.

import (
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/image"
)

// decode parses a JSON object strictly into v ("" and "null" mean {}).
func decode(what, s string, v any) error {
	s = strings.TrimSpace(s)
	if s == "" || s == "null" {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fail(errdefs.InvalidArgument, "%s: invalid JSON: %v", what, err)
	}
	if dec.More() {
		return fail(errdefs.InvalidArgument, "%s: invalid JSON: trailing data", what)
	}
	return nil
}

func envList(m map[string]string) ([]string, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fail(errdefs.InvalidArgument, "env key %q: must be non-empty without '=' or NUL", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + m[k]
	}
	return out, nil
}

// runtimeOptions is box_runtime_open's option bag: libbox.Options, with
// the registry settings written as their LIBBOX_* variables write them.
// Fields left out (or empty) take the environment's value.
type runtimeOptions struct {
	Home               string          `json:"home"`
	BootTimeout        json.RawMessage `json:"boot_timeout"` // seconds (a number), or a string as LIBBOX_BOOT_TIMEOUT
	Accel              string          `json:"accel"`
	Kernel             string          `json:"kernel"`
	KernelModules      string          `json:"kernel_modules"`
	Agent              string          `json:"agent"`
	VMDebug            bool            `json:"vm_debug"`
	RegistryAuth       string          `json:"registry_auth"`
	InsecureRegistries string          `json:"insecure_registries"`
	RegistryMirrors    string          `json:"registry_mirrors"`
}

func parseRuntimeOptions(optsJSON string) (libbox.Options, error) {
	var o runtimeOptions
	if err := decode("runtime options", optsJSON, &o); err != nil {
		return libbox.Options{}, err
	}
	reg, err := image.ParseRegistries(o.RegistryAuth, o.InsecureRegistries, o.RegistryMirrors)
	if err != nil {
		return libbox.Options{}, err
	}
	opts := libbox.Options{Home: o.Home, Accel: o.Accel, Kernel: o.Kernel, KernelModules: o.KernelModules,
		Agent: o.Agent, VMDebug: o.VMDebug, Registries: reg}
	if t := string(o.BootTimeout); t != "" && t != "null" {
		_ = json.Unmarshal(o.BootTimeout, &t) // a string; any other value keeps its JSON text
		if opts.BootTimeout, err = libbox.ParseBootTimeout(t); err != nil {
			return libbox.Options{}, fail(errdefs.InvalidArgument, "runtime options: boot_timeout: %v", err)
		}
	}
	return opts, nil
}

// boxOptions is box_create's option bag.
type boxOptions struct {
	Image      string            `json:"image"`
	Platform   string            `json:"platform"`
	Name       string            `json:"name"`
	Isolation  string            `json:"isolation"`
	CPUs       int               `json:"cpus"`
	MemoryMiB  int               `json:"memory_mib"`
	Env        map[string]string `json:"env"`
	Cwd        string            `json:"cwd"`
	Network    libbox.Network    `json:"network"` // true, false or an object
	AutoRemove bool              `json:"auto_remove"`
	Detach     bool              `json:"detach"`
	Volumes    []struct {
		Host     string `json:"host"`
		Box      string `json:"box"`
		ReadOnly bool   `json:"read_only"`
	} `json:"volumes"`
	// From clones a snapshot or a box (BoxOptions.From).
	From string `json:"from"`
}

func parseBoxOptions(optsJSON string, progress Progress) (libbox.BoxOptions, error) {
	var o boxOptions
	if err := decode("box options", optsJSON, &o); err != nil {
		return libbox.BoxOptions{}, err
	}
	env, err := envList(o.Env)
	if err != nil {
		return libbox.BoxOptions{}, err
	}
	bo := libbox.BoxOptions{
		Image: o.Image, Platform: o.Platform, Name: o.Name, Isolation: o.Isolation, CPUs: o.CPUs, MemoryMiB: o.MemoryMiB,
		Env: env, WorkingDir: o.Cwd, Network: o.Network, AutoRemove: o.AutoRemove, Detach: o.Detach,
	}
	for _, v := range o.Volumes {
		bo.Volumes = append(bo.Volumes, libbox.Volume{HostPath: v.Host, BoxPath: v.Box, ReadOnly: v.ReadOnly})
	}
	bo.From = o.From
	bo.Progress = imageProgress(progress)
	return bo, nil
}

// imageProgress adapts a Progress callback (nil stays nil).
func imageProgress(progress Progress) func(image.Progress) {
	if progress == nil {
		return nil
	}
	return func(p image.Progress) { progress(p.Layer, p.Done, p.Total) }
}

// execRequest is box_exec_async's request.
type execRequest struct {
	Args      []string          `json:"args"`
	Env       map[string]string `json:"env"`
	Cwd       string            `json:"cwd"`
	User      string            `json:"user"`
	TTY       bool              `json:"tty"`
	Rows      uint32            `json:"rows"`
	Cols      uint32            `json:"cols"`
	TimeoutMs int64             `json:"timeout_ms"`
	Stdin     bool              `json:"stdin"`
	ImageCmd  bool              `json:"image_cmd"`
}

// parseExecRequest decodes and checks an exec request; the caller sets the
// command's output writers.
func parseExecRequest(reqJSON string) (libbox.Command, error) {
	if strings.TrimSpace(reqJSON) == "" {
		return libbox.Command{}, fail(errdefs.InvalidArgument, "exec request is empty: give at least {\"args\": [\"cmd\"]}")
	}
	var r execRequest
	if err := decode("exec request", reqJSON, &r); err != nil {
		return libbox.Command{}, err
	}
	if !r.ImageCmd && len(r.Args) == 0 || len(r.Args) > 0 && r.Args[0] == "" {
		return libbox.Command{}, fail(errdefs.InvalidArgument, "exec request: args must name a command (or set \"image_cmd\": true)")
	}
	if r.TimeoutMs < 0 {
		return libbox.Command{}, fail(errdefs.InvalidArgument, "exec request: timeout_ms %d is negative", r.TimeoutMs)
	}
	env, err := envList(r.Env)
	if err != nil {
		return libbox.Command{}, err
	}
	return libbox.Command{
		Args: r.Args, Env: env, Dir: r.Cwd, User: r.User, TTY: r.TTY, Rows: r.Rows, Cols: r.Cols,
		OpenStdin: r.Stdin, Timeout: time.Duration(r.TimeoutMs) * time.Millisecond, UseImageCmd: r.ImageCmd,
	}, nil
}

// pullRequest is box_pull_async's request.
type pullRequest struct {
	Ref      string `json:"ref"`
	Platform string `json:"platform"`
}

func parsePullRequest(reqJSON string) (pullRequest, error) {
	var r pullRequest
	if err := decode("pull request", reqJSON, &r); err != nil {
		return r, err
	}
	if r.Ref == "" {
		return r, fail(errdefs.InvalidArgument, "pull request: ref is required, e.g. {\"ref\": \"alpine:3.20\"}")
	}
	return r, nil
}

// imageJSON is an image as the C ABI describes it.
type imageJSON struct {
	Ref     string    `json:"ref"`
	ID      string    `json:"id"`
	Root    string    `json:"root"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	Config  struct {
		Env        []string `json:"env"`
		WorkingDir string   `json:"working_dir"`
		User       string   `json:"user"`
		Entrypoint []string `json:"entrypoint"`
		Cmd        []string `json:"cmd"`
	} `json:"config"`
}

func toImageJSON(img image.Image) imageJSON {
	j := imageJSON{Ref: img.Ref, ID: img.ID, Root: img.Root, Size: img.Size, Created: img.Created}
	j.Config.Env, j.Config.WorkingDir, j.Config.User = img.Config.Env, img.Config.WorkingDir, img.Config.User
	j.Config.Entrypoint, j.Config.Cmd = img.Config.Entrypoint, img.Config.Cmd
	return j
}
