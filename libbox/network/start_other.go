//go:build !linux

package network

import "os/exec"

func startHelperProcess(cmd *exec.Cmd) error { return cmd.Start() }
