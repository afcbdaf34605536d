package integration

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is where Debian's chromium package puts its launcher.
const chromiumPath = "/usr/bin/chromium"

// requireChromium skips the test when Chromium is missing, unless CI is
// set: there a missing browser is a failure.
func requireChromium(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if ci := os.Getenv("CI"); ci == "" || ci == "false" || ci == "0" {
			t.Skipf("%s not found (install Debian's chromium package; with CI set this is a failure): %v", chromiumPath, err)
		}
		t.Fatalf("CI is set but %s is missing: %v", chromiumPath, err)
	}
}

// startChromium starts headless Chromium with the flags every browser test
// needs (DESIGN.md, "Chrome as a client") plus extra, for at most budget.
// It returns the browser's context and a function that closes the browser
// gracefully (it also runs when the test ends); the browser's output is
// logged when the test fails.
func startChromium(t *testing.T, budget time.Duration, extra ...chromedp.ExecAllocatorOption) (context.Context, func()) {
	t.Helper()
	requireChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	out := &chromiumOutput{}
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.CombinedOutput(out),
	}, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	var once sync.Once
	closeBrowser := func() {
		once.Do(func() {
			// A graceful Browser.close first; the cancels kill whatever
			// is left and wait for the process to go.
			cctx, ccancel := context.WithTimeout(browserCtx, 5*time.Second)
			defer ccancel()
			if err := chromedp.Cancel(cctx); err != nil && !errors.Is(err, context.Canceled) {
				t.Logf("closing chromium: %v", err)
			}
			cancelBrowser()
			cancelAlloc()
			cancel()
		})
	}
	t.Cleanup(func() {
		closeBrowser()
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
	// The first call starts the browser; it must not carry a short timeout
	// of its own (chromedp ties the browser's life to it).
	startedAt := time.Now()
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	t.Logf("chromium started in %v", time.Since(startedAt).Round(time.Millisecond))
	return browserCtx, closeBrowser
}
