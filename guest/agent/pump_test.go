package agent

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libbox/libbox/guest/agentpb"
)

type captureStream struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *captureStream) Send(ev *agentpb.ExecEvent) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out.Write(ev.GetOutput().GetData())
	return nil
}

// TestPumpKeepsOutputWhenTheDeadlineWinsTheRace: on a busy machine the
// drain deadline can fire before the poller noticed data written before the
// exit; that data must still be delivered.
func TestPumpKeepsOutputWhenTheDeadlineWinsTheRace(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := bytes.Repeat([]byte("output written before the exit\n"), 1800) // > one chunk, < the pipe buffer
	go func() {
		w.Write(want)
		w.Close()
	}()
	time.Sleep(50 * time.Millisecond)
	// The deadline already passed when the pump first reads.
	if err := r.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	cs := &captureStream{}
	p := &proc{out: &events{one: cs.Send}}
	p.pump(r, agentpb.Output_STDOUT)
	if got := cs.out.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("pump delivered %d of %d bytes", len(got), len(want))
	}
}
