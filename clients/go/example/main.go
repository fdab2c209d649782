// Command example runs a container from Go with package cm: it pulls the image (printing the progress),
// runs a command to its exit, execs into a running container with stdin, takes a Stats sample and removes
// what it made.
//
//	go run ./example -host unix:/run/cm.sock -image 127.0.0.1:5000/library/busybox
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/cm-project/cm/clients/go/cm"
	pb "github.com/cm-project/cm/clients/go/cmv1"
)

func main() {
	host := flag.String("host", cm.DefaultHost, "cm-server address: unix:/path or tcp://HOST:PORT")
	image := flag.String("image", "", "image reference to pull and run")
	flag.Parse()
	if *image == "" {
		log.Fatal("-image is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := cm.Dial(*host)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	progress := make(chan *pb.PullImageResponse)
	go func() {
		for event := range progress {
			if s := event.GetSummary(); s != nil {
				fmt.Printf("pull: %d/%d bytes\n", s.GetCurrentBytes(), s.GetTotalBytes())
			}
		}
	}()
	done, err := c.Pull(ctx, *image, progress)
	if err != nil {
		log.Fatalf("pull: %v", err)
	}
	fmt.Printf("pull: done %s\n", done.GetImageId())

	spec := &pb.ContainerSpec{Image: *image, Command: []string{"sh", "-c", "echo hello from go; exit 3"}, AutoRemove: true}
	_, exit, err := c.Run(ctx, spec, os.Stdout, os.Stderr)
	if err != nil {
		log.Fatalf("run: %v", err)
	}
	fmt.Printf("run: exit %d\n", exit.GetExitCode())

	id, err := c.RunDetached(ctx, &pb.ContainerSpec{Image: *image, Command: []string{"sleep", "60"}})
	if err != nil {
		log.Fatalf("run -d: %v", err)
	}
	defer c.Remove(context.Background(), id, true)
	var sorted strings.Builder
	code, err := c.Exec(ctx, id, cm.Exec{Argv: []string{"sort", "-r"}, Stdin: strings.NewReader("a\nb\nc\n"), Stdout: &sorted})
	if err != nil {
		log.Fatalf("exec: %v", err)
	}
	fmt.Printf("exec: stdout %q, exit %d\n", sorted.String(), code)
	sample, err := c.Stats(ctx, id)
	if err != nil {
		log.Fatalf("stats: %v", err)
	}
	fmt.Printf("stats: pids %d, memory %d bytes\n", sample.GetPids().GetCurrent(), sample.GetMemory().GetUsageBytes())
	if err := c.Remove(ctx, id, true); err != nil {
		log.Fatalf("remove: %v", err)
	}
	_, err = c.Wait(ctx, id)
	fmt.Printf("removed: %v\n", cm.IsNotFound(err))
}
