package bootparam

import (
	"slices"
	"strings"
	"testing"
)

func TestParseVolumesRoundTrip(t *testing.T) {
	vols := []Volume{{Tag: "vol0", BoxPath: "/mnt/my src,x:y", ReadOnly: true}, {Tag: "vol1", BoxPath: "/data"}}
	s := FormatVolumes(vols)
	if strings.ContainsAny(s, " \t") {
		t.Fatalf("volumes parameter %q has blanks", s)
	}
	got, err := ParseVolumes(s)
	if err != nil || !slices.Equal(got, vols) {
		t.Fatalf("ParseVolumes(%q) = %v, %v", s, got, err)
	}
	for _, bad := range []string{"vol0", "vol0:rel/path", ":/x", "vol0:/x:rx"} {
		if _, err := ParseVolumes(bad); err == nil {
			t.Errorf("ParseVolumes(%q) accepted", bad)
		}
	}
}

func TestHello(t *testing.T) {
	if v, ok := ParseHello(Hello(LaunchProtocol)); !ok || v != LaunchProtocol {
		t.Fatalf("ParseHello(Hello(%d)) = %d, %v", LaunchProtocol, v, ok)
	}
	for _, bad := range []string{"", "r", "box-agent launch protocol ", "box-agent launch protocol x", "box-agent launch protocol 0"} {
		if v, ok := ParseHello([]byte(bad)); ok {
			t.Errorf("ParseHello(%q) = %d, true", bad, v)
		}
	}
}
