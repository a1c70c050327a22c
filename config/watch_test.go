package config

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// startWatch runs Watch on file; each call of changed sends the file's
// content at that moment. stop cancels it and checks that it returned.
func startWatch(t *testing.T, file string) (got <-chan string, stop func()) {
	t.Helper()
	ch := make(chan string, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	w, err := NewWatcher(file)
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	w.debounce = 20 * time.Millisecond
	go func() {
		defer close(done)
		w.Run(ctx, func() {
			b, _ := os.ReadFile(file)
			ch <- string(b)
		})
	}()
	return ch, func() {
		cancel()
		select {
		case <-done:
			w.Close()
		case <-time.After(5 * time.Second):
			t.Fatal("Watch did not return after cancel")
		}
	}
}

func expect(t *testing.T, got <-chan string, want string) {
	t.Helper()
	select {
	case g := <-got:
		if g != want {
			t.Fatalf("changed saw %q, want %q", g, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("changed not called for %q", want)
	}
}

func write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestWatch sees in-place writes and rename-over saves once each, and
// ignores a touch and a rewrite of the same bytes. Each change is checked
// by the content changed saw, so a spurious call shows up as a stale one.
func TestWatch(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	file := filepath.Join(dir, "gaia.yaml")
	write(t, file, "v: 0\n")
	got, stop := startWatch(t, file)

	write(t, file, "v: 1\n") // in place: truncate + write, several events
	expect(t, got, "v: 1\n")

	tmp := filepath.Join(dir, ".gaia.yaml.swp") // editor-style save
	write(t, tmp, "v: 2\n")
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "v: 2\n")

	now := time.Now()
	if err := os.Chtimes(file, now, now); err != nil { // touch
		t.Fatal(err)
	}
	write(t, file, "v: 2\n") // same bytes
	write(t, filepath.Join(dir, "other.txt"), "x")
	write(t, file, "v: 3\n")
	expect(t, got, "v: 3\n") // not "v: 2\n" from the touch

	stop()
	select {
	case g := <-got:
		t.Errorf("changed called again with %q", g)
	default:
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d after Watch returned, %d before", runtime.NumGoroutine(), before)
		}
		runtime.Gosched()
	}
}

// TestWatchConfigMap swaps a Kubernetes-style ..data symlink.
func TestWatchConfigMap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name, "gaia.yaml"), content)
	}
	version("..v1", "v: 1\n")
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "gaia.yaml")
	if err := os.Symlink("..data/gaia.yaml", file); err != nil {
		t.Fatal(err)
	}
	got, stop := startWatch(t, file)
	defer stop()

	version("..v2", "v: 2\n")
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "v: 2\n")
}

func TestWatchMissingDir(t *testing.T) {
	_, err := NewWatcher(filepath.Join(t.TempDir(), "nope", "gaia.yaml"))
	if err == nil {
		t.Error("got no error for a missing directory")
	}
}
