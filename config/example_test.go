package config_test

import (
	"fmt"
	"log"

	"github.com/gaia-proxy/gaia-proxy/config"
)

func ExampleLoad() {
	cfg, err := config.Load(config.LoadOptions{
		File: "testdata/spec.yaml",
		Env:  []string{"PORT=3000", "GAIA_REDIS_URL=redis://cache:6379/0"}, // main passes os.Environ()
		Overrides: map[string]any{ // from flags the user set
			"upstream": "http://127.0.0.1:9001",
		},
	})
	if err != nil {
		log.Fatal(err) // every problem, one per line, each naming its key
	}
	fmt.Println("listen:", cfg.Listen)
	fmt.Println("upstream:", cfg.Upstream)
	fmt.Println("redis:", cfg.Redis.URL)
	for _, l := range cfg.Plans["free"].Rate {
		fmt.Printf("free: %d per %s\n", l.Limit, l.Window)
	}
	for _, w := range cfg.Warnings() {
		fmt.Println("warning:", w)
	}
	// Output:
	// listen: :3000
	// upstream: http://127.0.0.1:9001
	// redis: redis://cache:6379/0
	// free: 10 per 1s
	// free: 300 per 1m0s
	// warning: keys[1].key: API key "ci-bot" is in plain text; put its hash in keys[1].hash instead (gaia-proxy hash-key)
	// warning: database.url: not set, so runtime rules, violations, analytics and the quota ledger stay in this replica's data_dir; replicas sharing this Redis share its limits but not those: give them one database.url
}
