#!/usr/bin/env bash
# Regenerates clients/go/cmv1 from proto/cm/v1/cm.proto (run it after changing the proto; the result is
# committed): protoc (the one grpcio-tools bundles, see scripts/install-deps) with protoc-gen-go and
# protoc-gen-go-grpc:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/go/bin:$PATH"
python3 -m grpc_tools.protoc -I proto \
    --go_out=clients/go/cmv1 --go_opt=paths=source_relative --go_opt=Mcm/v1/cm.proto=cm/clients/go/cmv1 \
    --go-grpc_out=clients/go/cmv1 --go-grpc_opt=paths=source_relative \
    --go-grpc_opt=Mcm/v1/cm.proto=cm/clients/go/cmv1 \
    proto/cm/v1/cm.proto
# source_relative keeps proto's directory (cm/v1/); the package lives directly in cmv1/.
mv clients/go/cmv1/cm/v1/*.go clients/go/cmv1/
rmdir clients/go/cmv1/cm/v1 clients/go/cmv1/cm
