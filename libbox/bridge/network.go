package bridge

import (
	"context"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

// Publish publishes a port of a running box (request: a port mapping,
// {"host", "box", "protocol"}); done gets the mapping as bound (host port
// 0 replaced by the one picked).
func Publish(boxH uint64, reqJSON string, done Done) error {
	m, err := parsePort("box_publish", reqJSON)
	if err != nil {
		return err
	}
	return boxAsync(boxH, done, "box_publish", func(ctx context.Context, b *libbox.Box) (string, error) {
		got, err := b.Publish(m)
		if err != nil {
			return "", err
		}
		return jsonOf(got)
	})
}

// Unpublish stops publishing a port named by its host address (as box
// info shows it) or, with no host, by its box port; done gets {}.
func Unpublish(boxH uint64, reqJSON string, done Done) error {
	m, err := parsePort("box_unpublish", reqJSON)
	if err != nil {
		return err
	}
	return boxAsync(boxH, done, "box_unpublish", func(ctx context.Context, b *libbox.Box) (string, error) {
		return "{}", b.Unpublish(m)
	})
}

func parsePort(what, reqJSON string) (libbox.PortMapping, error) {
	var m libbox.PortMapping
	if err := decode(what+" mapping", reqJSON, &m); err != nil {
		return m, err
	}
	if m.Host == "" && m.Box == 0 {
		return m, fail(errdefs.InvalidArgument, "%s: the mapping names no port (want {\"host\": \"127.0.0.1:8080\", \"box\": 80})", what)
	}
	return m, nil
}
