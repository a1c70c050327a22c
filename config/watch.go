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

// Watch calls changed, on Watch's goroutine, each time the content of file
// changes, until ctx is done; then it returns nil, leaving no goroutine
// behind. It returns an error only if it cannot start watching.
//
// Watch observes the file's directory, not the file, so that editors that
// save by renaming a new file over the old one, and Kubernetes ConfigMap
// updates (a symlink swap), are seen. Events are debounced (100ms) and
// compared by a SHA-256 of the content: a save that fires several events
// calls changed once, and a touch or a rewrite of the same bytes not at
// all. The content when Watch starts is the baseline. Edits to a symlink's
// target in another directory are not seen; SIGHUP covers that case.
//
// Watch only signals: the caller reloads with Load (viper's WatchConfig
// cannot be stopped and fires twice per save).
func Watch(ctx context.Context, file string, changed func()) error {
	return watch(ctx, file, 100*time.Millisecond, changed, func() {})
}

// watch is Watch with a settable debounce, and ready, called once the
// baseline is taken.
func watch(ctx context.Context, file string, debounce time.Duration, changed, ready func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("config: watch %s: %w", file, err)
	}
	defer w.Close() // waits for fsnotify's goroutine
	if err := w.Add(filepath.Dir(file)); err != nil {
		return fmt.Errorf("config: watch %s: %w", file, err)
	}
	last, _ := hashFile(file)
	ready()
	t := time.NewTimer(debounce)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Events:
			t.Reset(debounce)
		case <-w.Errors:
			t.Reset(debounce) // an overflow may hide an event: look anyway
		case <-t.C:
			// A missing file (mid-rename) keeps the last hash; its
			// re-creation is another event.
			if sum, err := hashFile(file); err == nil && sum != last {
				last = sum
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
