// Package cm is a small Go client for cm-server, over the stubs generated from proto/cm/v1/cm.proto
// (package cmv1): pull with progress, run to exit or detached, exec with stdio, stats, logs, removal.
// Every call takes a context: cancelling it cancels the call (an exec's process is killed with it).
// Errors are gRPC status errors (status.Code(err) is codes.NotFound, codes.AlreadyExists, ...).
//
//	c, err := cm.Dial("unix:/run/cm.sock")
//	_, err = c.Pull(ctx, "127.0.0.1:5000/library/busybox", nil)
//	id, exit, err := c.Run(ctx, &cmv1.ContainerSpec{Image: image, Command: []string{"echo", "hi"}}, os.Stdout, os.Stderr)
package cm

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/cm-project/cm/clients/go/cmv1"
)

// DefaultHost is where cm-server listens unless told otherwise.
const DefaultHost = "unix:/run/cm.sock"

// Client is a connection to cm-server. API is the generated client, for every call this package does not wrap.
type Client struct {
	conn *grpc.ClientConn
	API  pb.ContainerServiceClient
}

// Dial connects to host: unix:/path, unix:///path, tcp://HOST:PORT or HOST:PORT. The connection is plaintext
// unless opts carry transport credentials (grpc.WithTransportCredentials), which override the default.
func Dial(host string, opts ...grpc.DialOption) (*Client, error) {
	target, err := Target(host)
	if err != nil {
		return nil, err
	}
	all := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient(target, all...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", host, err)
	}
	return &Client{conn: conn, API: pb.NewContainerServiceClient(conn)}, nil
}

// DialEnv connects to $CM_HOST, or DefaultHost when it is unset; with $CM_TLS_CA set (and $CM_TLS_CERT and
// $CM_TLS_KEY, as cm-client takes them), over TLS with that CA and client certificate.
func DialEnv(opts ...grpc.DialOption) (*Client, error) {
	host := os.Getenv("CM_HOST")
	if host == "" {
		host = DefaultHost
	}
	if ca := os.Getenv("CM_TLS_CA"); ca != "" {
		config, err := TLSConfig(ca, os.Getenv("CM_TLS_CERT"), os.Getenv("CM_TLS_KEY"))
		if err != nil {
			return nil, err
		}
		opts = append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(config))}, opts...)
	}
	return Dial(host, opts...)
}

// TLSConfig is the TLS configuration for cm-server's TCP listeners: the server's certificate must be signed
// by the CA in caFile, and certFile and keyFile (PEM) are the client certificate the server requires.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading the TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	config := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" || keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the TLS client certificate: %w", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return config, nil
}

// Target is the gRPC target for a cm address.
func Target(host string) (string, error) {
	switch {
	case strings.HasPrefix(host, "unix:"):
		return host, nil
	case strings.HasPrefix(host, "tcp://"):
		return "passthrough:///" + strings.TrimPrefix(host, "tcp://"), nil
	case strings.Contains(host, "://"):
		return "", fmt.Errorf("unsupported address %q: use unix:/path or tcp://HOST:PORT", host)
	}
	return "passthrough:///" + host, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// IsNotFound reports whether err is a NOT_FOUND status (no such container, exec or image).
func IsNotFound(err error) bool { return status.Code(err) == codes.NotFound }

// Pull pulls an image. Every progress message (resolved first, then layer and summary ticks, done last) is
// sent on progress when it is not nil; Pull closes it before it returns. The result is the final done message.
func (c *Client) Pull(ctx context.Context, reference string, progress chan<- *pb.PullImageResponse) (*pb.PullDone, error) {
	if progress != nil {
		defer close(progress)
	}
	stream, err := c.API.PullImage(ctx, &pb.PullImageRequest{Reference: reference})
	if err != nil {
		return nil, err
	}
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, status.Error(codes.Internal, "the pull ended without a done message")
		}
		if err != nil {
			return nil, err
		}
		if progress != nil {
			select {
			case progress <- event:
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		if done := event.GetDone(); done != nil {
			return done, nil
		}
	}
}

// RunDetached creates and starts a container (cm-client run -d) and returns its id.
func (c *Client) RunDetached(ctx context.Context, spec *pb.ContainerSpec) (string, error) {
	response, err := c.API.Run(ctx, &pb.RunRequest{Spec: spec})
	return response.GetId(), err
}

// Run creates a container, connects its output to stdout and stderr (either may be nil), starts it, and
// waits for its exit: the container's id and exit status. Nothing of the output is lost: it is connected
// before the process starts. The container is left for the caller to remove (or set spec.AutoRemove).
func (c *Client) Run(ctx context.Context, spec *pb.ContainerSpec, stdout, stderr io.Writer) (string, *pb.ExitStatus, error) {
	created, err := c.API.Create(ctx, &pb.CreateRequest{Spec: spec})
	if err != nil {
		return "", nil, err
	}
	id := created.GetId()
	stream, err := c.API.Attach(ctx)
	if err != nil {
		return id, nil, err
	}
	start := &pb.AttachRequest{Frame: &pb.AttachRequest_Start{Start: &pb.AttachStart{Container: id, Start: true}}}
	if err := stream.Send(start); err != nil {
		return id, nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return id, nil, err
	}
	exit, err := copyOutput(stream.Recv, stdout, stderr)
	return id, exit, err
}

// output is what Exec and Attach streams send: started, stdout, stderr, exit.
type output interface {
	GetStdout() []byte
	GetStderr() []byte
	GetExit() *pb.ExitStatus
}

// copyOutput copies output frames to stdout and stderr until the exit frame.
func copyOutput[R output](recv func() (R, error), stdout, stderr io.Writer) (*pb.ExitStatus, error) {
	for {
		frame, err := recv()
		if errors.Is(err, io.EOF) {
			return nil, status.Error(codes.Internal, "the stream ended without an exit frame")
		}
		if err != nil {
			return nil, err
		}
		if data := frame.GetStdout(); len(data) > 0 && stdout != nil {
			if _, err := stdout.Write(data); err != nil {
				return nil, err
			}
		}
		if data := frame.GetStderr(); len(data) > 0 && stderr != nil {
			if _, err := stderr.Write(data); err != nil {
				return nil, err
			}
		}
		if exit := frame.GetExit(); exit != nil {
			return exit, nil
		}
	}
}

// Exec describes a process to run in a running container.
type Exec struct {
	// The command and its arguments.
	Argv []string
	// Extra environment ("KEY=VALUE"), working directory, "user[:group]"; empty ones use the container's.
	Env     []string
	Workdir string
	User    string
	// A pseudo-terminal (stderr is merged into stdout).
	Tty bool
	// Stdin, when not nil, is copied to the process, and its EOF closes the process's stdin.
	Stdin io.Reader
	// Stdout and Stderr receive the output; nil drops it.
	Stdout, Stderr io.Writer
}

// Exec runs a process in the running container to its end and returns its exit code (127: command not
// found, 126: not executable). Cancelling ctx kills the process.
func (c *Client) Exec(ctx context.Context, container string, e Exec) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.API.Exec(ctx)
	if err != nil {
		return -1, err
	}
	start := &pb.ExecStart{
		Container: container, Argv: e.Argv, Env: e.Env, Workdir: e.Workdir, User: e.User, Tty: e.Tty,
		Stdin: e.Stdin != nil,
	}
	if err := stream.Send(&pb.ExecRequest{Frame: &pb.ExecRequest_Start{Start: start}}); err != nil {
		return -1, err
	}
	if e.Stdin == nil {
		_ = stream.CloseSend()
	} else {
		// The only sender from here on (a stream's Send is not safe for concurrent use).
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := e.Stdin.Read(buf)
				if n > 0 {
					data := append([]byte(nil), buf[:n]...)
					if stream.Send(&pb.ExecRequest{Frame: &pb.ExecRequest_Stdin{Stdin: &pb.StdinData{Data: data}}}) != nil {
						return
					}
				}
				if err != nil {
					_ = stream.Send(&pb.ExecRequest{Frame: &pb.ExecRequest_CloseStdin{CloseStdin: true}})
					_ = stream.CloseSend()
					return
				}
			}
		}()
	}
	exit, err := copyOutput(stream.Recv, e.Stdout, e.Stderr)
	if err != nil {
		return -1, err
	}
	return int(exit.GetExitCode()), nil
}

// Wait waits for the container's main process to exit (at once if it has) and returns its exit status.
func (c *Client) Wait(ctx context.Context, container string) (*pb.ExitStatus, error) {
	response, err := c.API.Wait(ctx, &pb.WaitRequest{Container: container})
	return response.GetStatus(), err
}

// Stats returns one resource usage sample of a running container.
func (c *Client) Stats(ctx context.Context, container string) (*pb.StatsResponse, error) {
	stream, err := c.API.Stats(ctx, &pb.StatsRequest{Containers: []string{container}, NoStream: true})
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}

// StatsStream sends a sample of the container on samples every interval (0: the server's 1 s) until the
// container stops (nil) or ctx is cancelled; it closes samples before it returns.
func (c *Client) StatsStream(ctx context.Context, container string, interval time.Duration, samples chan<- *pb.StatsResponse) error {
	defer close(samples)
	request := &pb.StatsRequest{Containers: []string{container}}
	if interval > 0 {
		request.Interval = durationpb.New(interval)
	}
	stream, err := c.API.Stats(ctx, request)
	if err != nil {
		return err
	}
	for {
		sample, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case samples <- sample:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// Logs copies the container's log lines to stdout and stderr (either may be nil); with follow it goes on
// until the container exits or ctx is cancelled.
func (c *Client) Logs(ctx context.Context, container string, follow bool, stdout, stderr io.Writer) error {
	stream, err := c.API.Logs(ctx, &pb.LogsRequest{Container: container, Follow: follow})
	if err != nil {
		return err
	}
	for {
		entry, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		w := stdout
		if entry.GetStream() == pb.LogStream_LOG_STREAM_STDERR {
			w = stderr
		}
		if w != nil {
			if _, err := w.Write(entry.GetLine()); err != nil {
				return err
			}
		}
	}
}

// Remove removes a container and everything it made; force kills a running one first (FAILED_PRECONDITION
// otherwise).
func (c *Client) Remove(ctx context.Context, container string, force bool) error {
	_, err := c.API.Remove(ctx, &pb.RemoveRequest{Container: container, Force: force})
	return err
}
