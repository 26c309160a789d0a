#!/usr/bin/env bash
# Installs what `make test` and `make demo` need on a fresh Debian machine, as
# root. Installs only what is missing, so it costs nothing the second time.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip       || need+=(iproute2)
have iptables || need+=(iptables)
have nft      || need+=(nftables)
have arping   || need+=(arping)
have tcpdump  || need+=(tcpdump)
have protoc   || need+=(protobuf-compiler)
# The BGP e2e tests (e2e/bgp_test.go): BIRD 2 is the router.
[[ -x /usr/sbin/bird ]] || need+=(bird2)
have make     || need+=(make)
have gcc      || need+=(gcc)
have git      || need+=(git)
# make package / the packaging tests: lintian checks the .deb, rpm reads the
# .rpm; unshare (util-linux) stands in for journald's socket in a test.
have lintian  || need+=(lintian)
have rpm      || need+=(rpm)
have unshare  || need+=(util-linux)
# The systemd test (packaging/): a Debian rootfs booted under systemd-nspawn.
have debootstrap    || need+=(debootstrap)
have systemd-nspawn || need+=(systemd-container)
# The Python example checker (plugins/example-checker-python): Debian's
# gRPC, protobuf runtime and cryptography (its AutoMTLS certificate).
pymod() { [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c "import $1" >/dev/null 2>&1; }
pymod grpc            || need+=(python3-grpcio)
pymod google.protobuf || need+=(python3-protobuf)
pymod cryptography    || need+=(python3-cryptography)

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing ${need[*]}; run as root (apt-get) or install them" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! have go; then
  if [[ -x /usr/local/go/bin/go ]]; then
    echo "install-deps: Go is at /usr/local/go/bin; add it to PATH" >&2
  else
    echo "install-deps: Go $(sed -n 's/^go //p' "$(dirname "$0")/../go.mod") or newer is required (https://go.dev/doc/install)" >&2
  fi
  exit 1
fi
