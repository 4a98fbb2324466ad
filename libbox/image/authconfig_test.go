package image

import (
	"strings"
	"testing"

	"github.com/libbox/libbox/errdefs"
)

// A malformed LIBBOX_REGISTRY_AUTH entry is refused without echoing any part
// of it: the entry may be a bare "user:secret".
func TestMalformedRegistryAuthHidesTheSecret(t *testing.T) {
	for _, v := range []string{"user:s3cr3t-pw", "reg.local=s3cr3t-pw", "=user:s3cr3t-pw", "ok.local=a:b,user:s3cr3t-pw"} {
		t.Setenv("LIBBOX_REGISTRY_AUTH", v)
		_, err := registryConfigFromEnv()
		if !errdefs.IsInvalidArgument(err) {
			t.Fatalf("%q: err %v, want InvalidArgument", v, err)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Fatalf("%q: the error shows the secret: %v", v, err)
		}
	}
}
