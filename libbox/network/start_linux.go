package network

import (
	"os/exec"

	"github.com/libbox/libbox/libbox/internal/launch"
)

// startHelperProcess starts cmd from the launcher thread, so the helper
// gets the program's timer slack, not a coarser one of the calling thread
// (see package launch).
func startHelperProcess(cmd *exec.Cmd) (err error) {
	launch.Do(func() { err = cmd.Start() })
	return err
}
