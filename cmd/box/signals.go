package main

// Signals: caught from before a box exists, then forwarded to its process.

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// forwarded are the signals run and exec pass on to the process in the box
// (SIGWINCH becomes a terminal resize).
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH}

// signalWatch catches the forwarded signals from before the box exists, so
// that an early Ctrl-C cancels the start (and --rm still cleans up) instead
// of killing the CLI halfway.
type signalWatch struct {
	ch     chan os.Signal
	ctx    context.Context // cancelled by the first non-resize signal before handOff
	cancel context.CancelFunc
	stop   chan struct{}
	done   chan struct{}
	got    syscall.Signal // written by the watcher goroutine; read after done
}

func catchSignals() *signalWatch {
	w := &signalWatch{ch: make(chan os.Signal, 8), stop: make(chan struct{}), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	signal.Notify(w.ch, forwarded...)
	go func() {
		defer close(w.done)
		for {
			select {
			case s := <-w.ch:
				if s != syscall.SIGWINCH && w.got == 0 {
					w.got = s.(syscall.Signal)
					w.cancel()
				}
			case <-w.stop:
				return
			}
		}
	}()
	return w
}

// handOff stops the watcher (signals now queue on ch for execIn) and
// reports the signal that interrupted the start, or 0.
func (w *signalWatch) handOff() syscall.Signal {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.cancel()
	return w.got
}

func (w *signalWatch) release() {
	w.handOff()
	signal.Stop(w.ch)
}
