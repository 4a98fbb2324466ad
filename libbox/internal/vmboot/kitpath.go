package vmboot

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
)

// KitDirName is the directory of the guest kernel kit that packages ship
// beside libbox.so (see WriteKernelKit).
const KitDirName = "libbox-kernel"

// shippedKitDirs are where a packaged libbox keeps its kernel kit: beside
// the file holding this code (libbox.so in the wheel, the npm package and
// lib/ of the release tarball) and in ../lib of it (bin/box of the release
// tarball, which links libbox statically).
func shippedKitDirs() []string {
	self := selfObject()
	if self == "" {
		return nil
	}
	dir := filepath.Dir(self)
	return []string{filepath.Join(dir, KitDirName), filepath.Join(dir, "..", "lib", KitDirName)}
}

// selfObject returns the path of the shared object or executable that holds
// this function's code, from /proc/self/maps ("" when it cannot be told).
func selfObject() string {
	pc := uint64(reflect.ValueOf(selfObject).Pointer())
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 7f12a000-7f12b000 r-xp 00000000 fd:01 1234   /path/libbox.so
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], "/") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && pc >= start && pc < end {
			return strings.Join(fields[5:], " ")
		}
	}
	return ""
}
