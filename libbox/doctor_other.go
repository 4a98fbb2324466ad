//go:build !linux

package libbox

// hostChecks: namespace sandboxes exist on Linux only.
func hostChecks() []Check {
	return []Check{{Name: "sandbox", Status: CheckFail, Detail: "namespace sandboxes need Linux",
		Fix: "use isolation \"vm\" on this host", Needed: []string{IsolationSandbox}}}
}
