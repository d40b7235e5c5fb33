package retrypolicy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/sturdyoci/sturdy/retrypolicy"
)

func ExampleDo() {
	cfg := retrypolicy.Config{
		InitialBackoff: time.Millisecond, // tiny for the example; the default is 5 s
		MaxBackoff:     2 * time.Millisecond,
		OnRetry: func(ri retrypolicy.RetryInfo) {
			fmt.Printf("attempt %d failed: %s\n", ri.Attempt, ri.Reason)
		},
	}
	calls := 0
	err := retrypolicy.Do(context.Background(), cfg, 4<<30, func(ctx context.Context) error {
		// ctx carries this attempt's deadline, derived from the 4 GiB size.
		calls++
		if calls < 3 {
			return fmt.Errorf("read blob: %w", syscall.ECONNRESET)
		}
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// attempt 1 failed: connection reset
	// attempt 2 failed: connection reset
	// err: <nil>
}

func ExampleComputePerAttemptTimeout() {
	for _, size := range []int64{512 << 20, 10 << 30, 70 << 30, 1 << 40} {
		fmt.Printf("%5d MiB: %s\n", size>>20, retrypolicy.ComputePerAttemptTimeout(size).Round(time.Minute))
	}
	// A slower link: 1 MiB/s, factor 3.
	cfg := retrypolicy.Config{MinThroughput: 1 << 20, SafetyFactor: 3}
	fmt.Println("10 GiB at 1 MiB/s:", cfg.PerAttemptTimeout(10<<30).Round(time.Minute))
	// Output:
	//   512 MiB: 5m0s
	// 10240 MiB: 34m0s
	// 71680 MiB: 3h59m0s
	// 1048576 MiB: 8h0m0s
	// 10 GiB at 1 MiB/s: 8h0m0s
}

// A caller who knows more than the classifier overrides it.
func ExampleTransient() {
	errFlakyBackend := errors.New("backend says: try later")
	fmt.Println(retrypolicy.IsRetryable(errFlakyBackend))
	fmt.Println(retrypolicy.IsRetryable(retrypolicy.Transient(errFlakyBackend)))

	// And the other way: an EOF from a source that is known to be truncated
	// for good is not worth a retry.
	truncated := retrypolicy.Permanent(io.ErrUnexpectedEOF)
	fmt.Println(retrypolicy.IsRetryable(truncated), retrypolicy.ShortReason(truncated))
	// Output:
	// false
	// true
	// false unexpected EOF
}

func ExampleShortReason() {
	err := &retrypolicy.StatusError{StatusCode: 503, RetryAfter: 30 * time.Second}
	fmt.Println(retrypolicy.ShortReason(err), retrypolicy.IsRetryable(err))
	d, _ := retrypolicy.RetryAfter(fmt.Errorf("push layer: %w", err))
	fmt.Println("server asks to wait", d)
	// Output:
	// HTTP 503 true
	// server asks to wait 30s
}

// errQuotaBusy is what a custom registry's SDK returns when its storage
// quota service is momentarily busy: unknown to the built-in table, so
// permanent unless the caller says otherwise.
var errQuotaBusy = errors.New("quota service busy")

// A caller's classifier is asked before the built-in table; returning
// false leaves an error to the table.
func ExampleConfig_classify() {
	cfg := retrypolicy.Config{
		InitialBackoff: time.Millisecond,
		MaxBackoff:     2 * time.Millisecond,
		Classify: func(err error) (retrypolicy.Verdict, bool) {
			if errors.Is(err, errQuotaBusy) {
				return retrypolicy.Verdict{Retryable: true, Reason: "quota busy"}, true
			}
			return retrypolicy.Verdict{}, false
		},
		OnRetry: func(ri retrypolicy.RetryInfo) { fmt.Println("retrying:", ri.Reason) },
	}
	calls := 0
	err := retrypolicy.Do(context.Background(), cfg, 0, func(context.Context) error {
		calls++
		switch calls {
		case 1:
			return errQuotaBusy
		case 2:
			return fmt.Errorf("read: %w", syscall.ECONNRESET) // the table decides
		}
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// retrying: quota busy
	// retrying: connection reset
	// err: <nil>
}
