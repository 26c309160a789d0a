#!/bin/sh
# Builds the Python example checker into DIR: the script and the message
# classes protoc generates from the contract, so nothing generated is kept in
# the tree. Needs protoc (protobuf-compiler); running it needs python3-grpcio,
# python3-protobuf and python3-cryptography.
set -eu
out=${1:?usage: build.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
rpc=$here/../../rpc
mkdir -p "$out"
protoc -I "$rpc" --python_out="$out" "$rpc/keepvip/v1/keepvip.proto"
install -m 0755 "$here/checker.py" "$out/checker.py"
