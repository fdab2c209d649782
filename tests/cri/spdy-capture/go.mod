module cm.local/spdy-capture

go 1.21

require github.com/moby/spdystream v0.5.1
