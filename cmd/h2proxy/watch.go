package main

import (
	"os"
	"time"
)

// watchFile calls changed when the file named by path() changes (size,
// time or identity, as an atomic replace does). Polling once a second is
// enough for a user list and needs no platform-specific notification.
// It returns a function that stops watching.
func watchFile(path func() string, changed func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var last os.FileInfo
		if p := path(); p != "" {
			last, _ = os.Stat(p)
		}
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			p := path()
			if p == "" {
				continue
			}
			fi, err := os.Stat(p)
			if err != nil {
				continue
			}
			if last == nil || fi.Size() != last.Size() || !fi.ModTime().Equal(last.ModTime()) || !os.SameFile(fi, last) {
				last = fi
				changed()
			}
		}
	}()
	return func() { close(done) }
}
