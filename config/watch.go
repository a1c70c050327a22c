package config

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher reports edits of a config file. Create it with NewWatcher
// before loading the file, so that no edit can slip in between.
//
// It observes the file's directory, not the file, so that editors that
// save by renaming a new file over the old one, and Kubernetes ConfigMap
// updates (a symlink swap), are seen. Events are debounced (100ms) and
// compared by a SHA-256 of the content: a save that fires several events
// signals once, and a touch or a rewrite of the same bytes not at all.
// The content when NewWatcher returns is the baseline. Edits to a
// symlink's target in another directory are not seen; SIGHUP covers that.
//
// A Watcher only signals: the caller reloads with Load (viper's
// WatchConfig cannot be stopped and fires twice per save).
type Watcher struct {
	file     string
	w        *fsnotify.Watcher
	last     [sha256.Size]byte
	debounce time.Duration
}

// NewWatcher starts watching file and takes its content as the baseline.
func NewWatcher(file string) (*Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("config: watch %s: %w", file, err)
	}
	if err := w.Add(filepath.Dir(file)); err != nil {
		w.Close()
		return nil, fmt.Errorf("config: watch %s: %w", file, err)
	}
	last, _ := hashFile(file)
	return &Watcher{file: file, w: w, last: last, debounce: 100 * time.Millisecond}, nil
}

// Close releases the watcher; Run must have returned or never run.
func (wt *Watcher) Close() error { return wt.w.Close() }

// Run calls changed, on Run's goroutine, each time the file's content
// changes, until ctx is done.
func (wt *Watcher) Run(ctx context.Context, changed func()) {
	t := time.NewTimer(wt.debounce)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-wt.w.Events:
			t.Reset(wt.debounce)
		case <-wt.w.Errors:
			t.Reset(wt.debounce) // an overflow may hide an event: look anyway
		case <-t.C:
			// A missing file (mid-rename) keeps the last hash; its
			// re-creation is another event.
			if sum, err := hashFile(wt.file); err == nil && sum != wt.last {
				wt.last = sum
				changed()
			}
		}
	}
}

// hashFile returns the SHA-256 of a file's content.
func hashFile(name string) ([sha256.Size]byte, error) {
	b, err := os.ReadFile(name)
	return sha256.Sum256(b), err
}
