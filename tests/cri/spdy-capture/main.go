// Writes SPDY/3.1 frames made by a known-good peer (moby/spdystream's framer, which client-go, the kubelet
// and crictl use) to stdout: the fixture server/src/api/cri/stream/testdata/spdystream-frames.bin.
// Regenerate: cd tests/cri/spdy-capture && GOFLAGS=-mod=mod go run . > ../../../server/src/api/cri/stream/testdata/spdystream-frames.bin
package main

import (
	"bytes"
	"net/http"
	"os"

	"github.com/moby/spdystream/spdy"
)

func main() {
	var buf bytes.Buffer
	framer, err := spdy.NewFramer(&buf, &buf)
	if err != nil {
		panic(err)
	}
	errorHeaders := http.Header{}
	errorHeaders.Set("streamType", "error")
	errorHeaders.Add("X-Multi", "a")
	errorHeaders.Add("X-Multi", "b")
	stdoutHeaders := http.Header{}
	stdoutHeaders.Set("streamType", "stdout")
	frames := []spdy.Frame{
		&spdy.SynStreamFrame{StreamId: 1, Priority: 0, Headers: errorHeaders},
		&spdy.SynStreamFrame{StreamId: 3, Priority: 0, Headers: stdoutHeaders,
			CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagFin}},
		&spdy.SynReplyFrame{StreamId: 1, Headers: http.Header{}},
		&spdy.DataFrame{StreamId: 1, Data: []byte("hello")},
		&spdy.DataFrame{StreamId: 1, Flags: spdy.DataFlagFin},
		&spdy.PingFrame{Id: 7},
		&spdy.WindowUpdateFrame{StreamId: 1, DeltaWindowSize: 100},
		&spdy.SettingsFrame{FlagIdValues: []spdy.SettingsFlagIdValue{{Flag: 0, Id: spdy.SettingsInitialWindowSize, Value: 65536}}},
		&spdy.RstStreamFrame{StreamId: 3, Status: spdy.Cancel},
		&spdy.GoAwayFrame{LastGoodStreamId: 3, Status: spdy.GoAwayOK},
	}
	for _, f := range frames {
		if err := framer.WriteFrame(f); err != nil {
			panic(err)
		}
	}
	os.Stdout.Write(buf.Bytes())
}
