package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds YAML to Load: it must never panic, and a config it
// accepts must validate again unchanged.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"",
		"upstream: http://x\n",
		"upstream: http://x\nplans: {free: , anonymous: {}}\n",
		"upstream: http://x\nusers: {a.b: {plan: x}}\n",
		"upstream: http://x\nkeys: [{id: a, key: b, rate: [{limit: 1, window: 1s}]}]\n",
		"upstream: http://x\nroutes: [{name: r, path: '/a/*', methods: [get]}]\n",
		"upstream: http://x\nalerts: [{name: a, when: quota_used_pct >= 80, notify: [webhook: http://h]}]\n",
		"1: 2\n",
		"- a\n",
		"a: &a [*a]\n",
		"upstream: !!binary aGVsbG8=\n",
		"upstream: 2001-12-14\n",
		"plans: {free: {rate: [{limit: 1e300, window: 1s}]}}\n",
		"listen: {a: {b: {c: 1}}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := load("fuzz.yaml", data, LoadOptions{})
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted a config that Validate refuses: %v", err)
		}
		_ = c.Warnings()
		for i := range c.Keys {
			if _, err := c.HashedKey(i); err != nil {
				t.Fatalf("HashedKey(%d): %v", i, err)
			}
		}
		if keys := RestartRequired(c, c); len(keys) != 0 {
			t.Fatalf("RestartRequired(c, c) = %q", keys)
		}
	})
}
