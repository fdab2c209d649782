// Command example drives cm-server with the Go stubs generated from proto/cm/v1/cm.proto (package cmv1):
// a streamed pull, a container run to its exit and its logs, an Exec stream with stdin into a running
// container, a one-shot Stats sample, and removal. Each step prints one line; the end-to-end tests check them.
//
//	go run ./example -host unix:/run/cm.sock -image 127.0.0.1:5000/library/busybox
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "cm/clients/go/cmv1"
)

func main() {
	host := flag.String("host", "unix:/run/cm.sock", "cm-server address (gRPC target syntax)")
	image := flag.String("image", "", "image reference to pull and run")
	flag.Parse()
	if *image == "" {
		log.Fatal("-image is required")
	}
	conn, err := grpc.NewClient(*host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("connecting to %s: %v", *host, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := pb.NewContainerServiceClient(conn)
	if err := run(ctx, c, *image); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, c pb.ContainerServiceClient, image string) error {
	if err := pull(ctx, c, image); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	if err := runToExit(ctx, c, image); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	started, err := c.Run(ctx, &pb.RunRequest{Spec: &pb.ContainerSpec{Image: image, Command: []string{"sleep", "60"}}})
	if err != nil {
		return fmt.Errorf("run -d: %w", err)
	}
	id := started.GetId()
	defer c.Remove(context.Background(), &pb.RemoveRequest{Container: id, Force: true})
	if err := execWithStdin(ctx, c, id); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	if err := stats(ctx, c, id); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	if _, err := c.Remove(ctx, &pb.RemoveRequest{Container: id, Force: true}); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	_, err = c.Inspect(ctx, &pb.InspectRequest{Container: id})
	fmt.Printf("removed: %s\n", status.Code(err))
	if status.Code(err) != codes.NotFound {
		return fmt.Errorf("inspect after remove: %v", err)
	}
	return nil
}

func pull(ctx context.Context, c pb.ContainerServiceClient, image string) error {
	stream, err := c.PullImage(ctx, &pb.PullImageRequest{Reference: image})
	if err != nil {
		return err
	}
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("the stream ended without a done event")
		}
		if err != nil {
			return err
		}
		if r := event.GetResolved(); r != nil {
			fmt.Printf("pull: resolved %s\n", r.GetManifestDigest())
		}
		if d := event.GetDone(); d != nil {
			fmt.Printf("pull: done %s\n", d.GetImageId())
			return nil
		}
	}
}

func runToExit(ctx context.Context, c pb.ContainerServiceClient, image string) error {
	spec := &pb.ContainerSpec{Image: image, Command: []string{"sh", "-c", "echo hello from go; exit 3"}}
	started, err := c.Run(ctx, &pb.RunRequest{Spec: spec})
	if err != nil {
		return err
	}
	waited, err := c.Wait(ctx, &pb.WaitRequest{Container: started.GetId()})
	if err != nil {
		return err
	}
	logs, err := c.Logs(ctx, &pb.LogsRequest{Container: started.GetId()})
	if err != nil {
		return err
	}
	var lines strings.Builder
	for {
		entry, err := logs.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		lines.Write(entry.GetLine())
	}
	fmt.Printf("run: exit %d, logs %q\n", waited.GetStatus().GetExitCode(), lines.String())
	_, err = c.Remove(ctx, &pb.RemoveRequest{Container: started.GetId()})
	return err
}

// execWithStdin sends the start frame, stdin and a close-stdin frame, then reads started, the output and
// exactly one exit frame.
func execWithStdin(ctx context.Context, c pb.ContainerServiceClient, id string) error {
	stream, err := c.Exec(ctx)
	if err != nil {
		return err
	}
	frames := []*pb.ExecRequest{
		{Frame: &pb.ExecRequest_Start{Start: &pb.ExecStart{Container: id, Argv: []string{"sort", "-r"}, Stdin: true}}},
		{Frame: &pb.ExecRequest_Stdin{Stdin: &pb.StdinData{Data: []byte("a\nb\nc\n")}}},
		{Frame: &pb.ExecRequest_CloseStdin{CloseStdin: true}},
	}
	for _, frame := range frames {
		if err := stream.Send(frame); err != nil {
			return err
		}
	}
	var out []byte
	started, exits, code := false, 0, int32(-1)
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		switch frame := response.GetFrame().(type) {
		case *pb.ExecResponse_Started:
			started = true
		case *pb.ExecResponse_Stdout:
			out = append(out, frame.Stdout...)
		case *pb.ExecResponse_Exit:
			exits++
			code = frame.Exit.GetExitCode()
		}
	}
	fmt.Printf("exec: started %v, stdout %q, exits %d, exit %d\n", started, out, exits, code)
	return nil
}

func stats(ctx context.Context, c pb.ContainerServiceClient, id string) error {
	stream, err := c.Stats(ctx, &pb.StatsRequest{Containers: []string{id}, NoStream: true})
	if err != nil {
		return err
	}
	sample, err := stream.Recv()
	if err != nil {
		return err
	}
	var interfaces []string
	for _, n := range sample.GetNetworks() {
		interfaces = append(interfaces, n.GetInterface())
	}
	fmt.Printf("stats: pids %d, networks %s\n", sample.GetPids().GetCurrent(), strings.Join(interfaces, ","))
	return nil
}
