package procstat

import (
	"os"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	// A command name with spaces and a ')' in it.
	line := "4242 (a) b (c)) S 1 4242 4242 34816 4242 4194560 100 0 0 0 7 3 11 5 20 0 1 0 123456 1024000 250 18446744073709551615"
	s, err := Parse(4242, []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{Pid: 4242, State: 'S', Ppid: 1, TtyNr: 34816, Flags: 4194560, Utime: 7, Stime: 3, Cutime: 11, Cstime: 5, StartTicks: 123456, RSSPages: 250}
	if s != want {
		t.Fatalf("Parse = %+v, want %+v", s, want)
	}
	for _, bad := range []string{"", "1 (x S 1", "1 (x) S 1 2 3"} {
		if _, err := Parse(1, []byte(bad)); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
}

func TestReadSelf(t *testing.T) {
	s, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.Pid != os.Getpid() || s.Ppid != os.Getppid() || !strings.ContainsRune("RSD", rune(s.State)) || s.StartTicks == 0 || s.RSSPages <= 0 {
		t.Fatalf("Read(self) = %+v", s)
	}
	if _, err := Read(-1); err == nil {
		t.Fatal("Read(-1): no error")
	}
}
