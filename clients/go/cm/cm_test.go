package cm_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cm-project/cm/clients/go/cm"
	pb "github.com/cm-project/cm/clients/go/cmv1"
)

// These run against a real cm-server ($CM_HOST) that can pull $CM_TEST_IMAGE (a busybox image);
// tests/tests/clients.rs sets both.
func setup(t *testing.T) (*cm.Client, string, context.Context) {
	t.Helper()
	host, image := os.Getenv("CM_HOST"), os.Getenv("CM_TEST_IMAGE")
	if host == "" || image == "" {
		t.Skip("CM_HOST and CM_TEST_IMAGE are not set: these tests need a running cm-server")
	}
	c, err := cm.Dial(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if _, err := c.Pull(ctx, image, nil); err != nil {
		t.Fatalf("pull %s: %v", image, err)
	}
	return c, image, ctx
}

func sleeper(t *testing.T, c *cm.Client, ctx context.Context, image string) string {
	t.Helper()
	id, err := c.RunDetached(ctx, &pb.ContainerSpec{Image: image, Command: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Remove(context.Background(), id, true) })
	return id
}

func TestPullSendsResolvedFirstAndDoneLastOnTheProgressChannel(t *testing.T) {
	c, image, ctx := setup(t)
	progress := make(chan *pb.PullImageResponse, 100)
	var events []*pb.PullImageResponse
	collected := make(chan struct{})
	go func() {
		for event := range progress {
			events = append(events, event)
		}
		close(collected)
	}()
	done, err := c.Pull(ctx, image, progress)
	if err != nil {
		t.Fatal(err)
	}
	<-collected
	if !strings.HasPrefix(done.GetImageId(), "sha256:") {
		t.Fatalf("done: %v", done)
	}
	if events[0].GetResolved() == nil || events[len(events)-1].GetDone() == nil {
		t.Fatalf("events: first %v, last %v", events[0], events[len(events)-1])
	}
}

func TestRunConnectsOutputBeforeStartAndReturnsTheExitStatus(t *testing.T) {
	c, image, ctx := setup(t)
	var stdout, stderr bytes.Buffer
	spec := &pb.ContainerSpec{Image: image, Command: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}
	id, exit, err := c.Run(ctx, spec, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Remove(ctx, id, true)
	if exit.GetExitCode() != 3 || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Fatalf("exit %v, stdout %q, stderr %q", exit, stdout.String(), stderr.String())
	}
	waited, err := c.Wait(ctx, id)
	if err != nil || waited.GetExitCode() != 3 {
		t.Fatalf("wait: %v %v", waited, err)
	}
	var logs bytes.Buffer
	if err := c.Logs(ctx, id, false, &logs, nil); err != nil || logs.String() != "out\n" {
		t.Fatalf("logs: %q %v", logs.String(), err)
	}
}

func TestExecCopiesStdinAndOutputAndReturnsTheExitCode(t *testing.T) {
	c, image, ctx := setup(t)
	id := sleeper(t, c, ctx, image)
	var stdout, stderr bytes.Buffer
	code, err := c.Exec(ctx, id, cm.Exec{
		Argv: []string{"sh", "-c", "sort -r; echo done >&2; exit 4"}, Stdin: strings.NewReader("a\nb\nc\n"),
		Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil || code != 4 || stdout.String() != "c\nb\na\n" || stderr.String() != "done\n" {
		t.Fatalf("code %d, err %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}
	stdout.Reset()
	code, err = c.Exec(ctx, id, cm.Exec{Argv: []string{"tty"}, Tty: true, Stdout: &stdout})
	if err != nil || code != 0 || !strings.HasPrefix(stdout.String(), "/dev/pts/") {
		t.Fatalf("tty: code %d, err %v, stdout %q", code, err, stdout.String())
	}
	if code, err := c.Exec(ctx, id, cm.Exec{Argv: []string{"no-such-command"}}); err != nil || code != 127 {
		t.Fatalf("missing command: code %d, err %v", code, err)
	}
}

func TestCancellingTheContextEndsAnExec(t *testing.T) {
	c, image, ctx := setup(t)
	id := sleeper(t, c, ctx, image)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	started := time.Now()
	_, err := c.Exec(short, id, cm.Exec{Argv: []string{"sleep", "600"}})
	if status.Code(err) != codes.DeadlineExceeded || time.Since(started) > 5*time.Second {
		t.Fatalf("exec under a 300 ms deadline: %v after %v", err, time.Since(started))
	}
}

func TestStatsOneSampleAndAStream(t *testing.T) {
	c, image, ctx := setup(t)
	id := sleeper(t, c, ctx, image)
	sample, err := c.Stats(ctx, id)
	if err != nil || sample.GetId() != id || sample.GetPids().GetCurrent() != 1 {
		t.Fatalf("stats: %v %v", sample, err)
	}
	streaming, cancel := context.WithCancel(ctx)
	samples := make(chan *pb.StatsResponse)
	result := make(chan error, 1)
	go func() { result <- c.StatsStream(streaming, id, 200*time.Millisecond, samples) }()
	first, second := <-samples, <-samples
	cancel()
	for range samples {
	}
	if err := <-result; status.Code(err) != codes.Canceled {
		t.Fatalf("stream ended with %v", err)
	}
	if !second.GetTime().AsTime().After(first.GetTime().AsTime()) {
		t.Fatalf("samples not in time order: %v, %v", first.GetTime(), second.GetTime())
	}
}

func TestRemoveAndErrorsAreGrpcStatuses(t *testing.T) {
	c, image, ctx := setup(t)
	id := sleeper(t, c, ctx, image)
	if err := c.Remove(ctx, id, false); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("removing a running container: %v", err)
	}
	if err := c.Remove(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, id); !cm.IsNotFound(err) {
		t.Fatalf("wait after remove: %v", err)
	}
	if _, err := c.Pull(ctx, "Not A Reference", nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad reference: %v", err)
	}
	if _, err := cm.Dial("http://example"); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("an unsupported address: %v", err)
	}
}

func TestTargets(t *testing.T) {
	for host, want := range map[string]string{
		"unix:/run/cm.sock":    "unix:/run/cm.sock",
		"unix:///run/cm.sock":  "unix:///run/cm.sock",
		"tcp://127.0.0.1:7070": "passthrough:///127.0.0.1:7070",
		"127.0.0.1:7070":       "passthrough:///127.0.0.1:7070",
	} {
		if got, err := cm.Target(host); err != nil || got != want {
			t.Errorf("Target(%q) = %q, %v; want %q", host, got, err, want)
		}
	}
}
