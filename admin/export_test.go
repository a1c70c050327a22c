package admin

// SetUsageReaders sets how many subjects the usage list reads at once,
// until the returned function restores it.
func SetUsageReaders(n int) (restore func()) {
	old := usageReaders
	usageReaders = n
	return func() { usageReaders = old }
}
