package main

import (
	"os"
	"strings"
	"testing"
)

func TestCatchesWrongVzCalls(t *testing.T) {
	wd, _ := os.Getwd()
	c := NewChecker("arm64")
	err := c.Check("./testdata/bad", wd)
	if err == nil {
		t.Fatal("a call with a wrong argument type and a missing function type-checked")
	}
	for _, want := range []string{"NewVirtualMachineWithWings", "assignment mismatch", `"two"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestAcceptsRightVzCalls(t *testing.T) {
	wd, _ := os.Getwd()
	c := NewChecker("arm64")
	if err := c.Check("./testdata/good", wd); err != nil {
		t.Fatal(err)
	}
}
