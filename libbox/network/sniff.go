package network

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
)

// maxSniff is how much a connection may send before it names its host.
const maxSniff = 16 << 10

var errNoName = errors.New("no host name in the first bytes")

// sniffName reads the start of a connection until it names its host: the
// SNI of a TLS ClientHello, or the Host header of an HTTP request. It
// returns the name (lower case, no port) and every byte it read.
func sniffName(c net.Conn, port uint16) (string, []byte, error) {
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	for len(buf) < maxSniff {
		k, err := c.Read(tmp)
		buf = append(buf, tmp[:k]...)
		name, done, perr := parseName(buf)
		if done {
			return name, buf, perr
		}
		if err != nil {
			if err == io.EOF {
				err = errNoName
			}
			return "", buf, err
		}
	}
	return "", buf, errNoName
}

// parseName looks for a host name in the first bytes of a connection.
// done is false while more bytes could still name it.
func parseName(b []byte) (name string, done bool, err error) {
	if len(b) == 0 {
		return "", false, nil
	}
	if b[0] == 0x16 {
		return parseSNI(b)
	}
	return parseHost(b)
}

func parseHost(b []byte) (string, bool, error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return "", false, nil
	}
	lines := strings.Split(string(b[:end]), "\r\n")
	if f := strings.Fields(lines[0]); len(f) != 3 || !strings.HasPrefix(f[2], "HTTP/") {
		return "", true, errNoName
	}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), "host") {
			return hostOnly(strings.TrimSpace(v)), true, nil
		}
	}
	return "", true, errNoName
}

// hostOnly strips a port and IPv6 brackets from a Host header value.
func hostOnly(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return strings.ToLower(h[1:i])
		}
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.Count(h, ":") == 1 {
		h = h[:i]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// parseSNI reads the server_name extension of a TLS ClientHello carried in
// the first handshake record.
func parseSNI(b []byte) (string, bool, error) {
	if len(b) < 5 {
		return "", false, nil
	}
	recLen := int(binary.BigEndian.Uint16(b[3:5]))
	if len(b) < 5+recLen {
		return "", false, nil
	}
	p := parser{b: b[5 : 5+recLen]}
	if p.u8() != 1 { // ClientHello
		return "", true, errNoName
	}
	hsLen := p.u24()
	if hsLen > len(p.b) {
		return "", true, errNoName // spans records: not accepted
	}
	p.b = p.b[:hsLen]
	p.skip(2 + 32)  // version, random
	p.skip(p.u8())  // session id
	p.skip(p.u16()) // cipher suites
	p.skip(p.u8())  // compression methods
	ext := p.sub(p.u16())
	for !p.bad && len(ext.b) >= 4 {
		typ := ext.u16()
		body := ext.sub(ext.u16())
		if typ != 0 {
			continue
		}
		list := body.sub(body.u16())
		for !list.bad && len(list.b) >= 3 {
			kind := list.u8()
			host := list.sub(list.u16())
			if kind == 0 && !host.bad {
				return strings.TrimSuffix(strings.ToLower(string(host.b)), "."), true, nil
			}
		}
	}
	return "", true, errNoName
}

// parser reads big-endian fields, turning bad once it runs out of bytes.
type parser struct {
	b   []byte
	bad bool
}

func (p *parser) take(k int) []byte {
	if p.bad || k > len(p.b) {
		p.bad = true
		p.b = nil
		return make([]byte, k)
	}
	v := p.b[:k]
	p.b = p.b[k:]
	return v
}

func (p *parser) u8() int  { return int(p.take(1)[0]) }
func (p *parser) u16() int { return int(binary.BigEndian.Uint16(p.take(2))) }
func (p *parser) u24() int {
	v := p.take(3)
	return int(v[0])<<16 | int(v[1])<<8 | int(v[2])
}
func (p *parser) skip(k int) { p.take(k) }
func (p *parser) sub(k int) *parser {
	v := p.take(k)
	return &parser{b: v, bad: p.bad}
}
