// Command mkkit writes the guest kernel kit that libbox packages ship beside
// libbox.so (see vmboot.WriteKernelKit): the kernel libbox would boot here
// (-kernel, else the cache `./build.sh deps` fills, else /boot) and only the
// modules a box loads. Run by scripts/vm.sh at build time.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/libbox/libbox/libbox/internal/vmboot"
)

func main() {
	out := flag.String("o", "", "output directory (replaced)")
	kernel := flag.String("kernel", "", "guest kernel image (default: the one libbox finds)")
	modules := flag.String("modules", "", "its modules directory (with -kernel)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "mkkit: -o DIR is required")
		os.Exit(2)
	}
	k, err := vmboot.FindKernel(*kernel, *modules)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkkit:", err)
		os.Exit(1)
	}
	n, err := vmboot.WriteKernelKit(k, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkkit:", err)
		os.Exit(1)
	}
	fmt.Printf("%s: kernel %s, %.1f MiB\n", *out, k.Version, float64(n)/(1<<20))
}
