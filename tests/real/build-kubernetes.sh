#!/usr/bin/env bash
# Builds kubeadm, kubelet, kubectl, kube-apiserver and kube-controller-manager v1.20.2 from
# Debian bookworm's `kubernetes` source package (the full upstream tree with vendor/), for
# the real-Kubernetes tier of the end-to-end tests (tests/real/README.md). Prints the
# directory holding the binaries.
#
# The output is cached outside the checkout, in
#   ${KJA_NODE_CACHE:-/var/cache/kube-join-agent}/kubernetes-v1.20.2-<key>/
# where <key> hashes this script (the whole recipe; it uses no patch files), with a
# `.complete` marker: a second run prints that directory in about a second. A failed run
# can simply be repeated: the Go build cache (shared, under the cache directory) and the
# prepared source tree are kept, so it goes on where it stopped.
#
# Unattended, as root, on Debian 12: installs what it needs (golang-1.19-go, gcc,
# libc6-dev), downloads the sources through a private apt state (the system's apt sources
# and lists are not touched), logs every step to <cache>/kubernetes-v1.20.2-<key>.log and
# fails naming the step. Takes about 16 minutes on 2 quiet cores, twice that when busy.
set -Eeuo pipefail

version=v1.20.2
deb_version=1.20.5+really1.20.2-1.1+deb12u1
orig_tarball=kubernetes_1.20.5+really1.20.2.orig.tar.gz
orig_sha256=b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc
git_commit=faecb196815e248d3ecfb03c680a4507229c2a56
build_date=2021-01-13T13:20:00Z # upstream's v1.20.2 release build
reflect2_pkg=golang-github-modern-go-reflect2-dev
goroot=/usr/lib/go-1.19
binaries=(kubeadm kubectl kube-controller-manager kube-apiserver kubelet)

cache=${KJA_NODE_CACHE:-/var/cache/kube-join-agent}
self=$(readlink -f "$0")
key=$(cat "$self" | sha256sum | cut -c1-12)
out=$cache/kubernetes-$version-$key
work=$cache/kubernetes-build-$key
log=$cache/kubernetes-$version-$key.log
gocache=$cache/kubernetes-gocache

if [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi

die() {
  echo "build-kubernetes: $*" >&2
  exit 1
}
[ "$(id -u)" -eq 0 ] || die "must run as root (it installs Debian packages and writes $cache)"
[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || die "only amd64 is supported"

mkdir -p "$cache"
# One build at a time; a second caller waits, then finds the result.
exec 9>"$cache/.build-kubernetes.lock"
flock 9
if [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi

: >"$log"
started=$(date +%s)
current_step=""
step() {
  current_step=$1
  printf '\n== %s (+%ss) %s\n' "$(date -u +%FT%TZ)" "$(($(date +%s) - started))" "$1" >>"$log"
  echo "build-kubernetes: $1 (+$(($(date +%s) - started))s)" >&2
}
on_error() {
  local rc=$?
  {
    echo "build-kubernetes: step \"$current_step\" failed (exit $rc); last lines of $log:"
    tail -n 30 "$log" | sed 's/^/  /'
    echo "build-kubernetes: re-run to resume (the Go build cache and prepared tree are kept)"
  } >&2
  exit "$rc"
}
trap on_error ERR
echo "build-kubernetes: building $version into $out, log in $log" >&2

# ---------------------------------------------------------------------------------------
step "install build dependencies (golang-1.19-go gcc libc6-dev)"
need=()
for pkg in golang-1.19-go gcc libc6-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${need[@]}" >>"$log" 2>&1; then
    apt-get update >>"$log" 2>&1
    apt-get install -y --no-install-recommends "${need[@]}" >>"$log" 2>&1
  fi
fi
[ -x "$goroot/bin/go" ] || die "step \"$current_step\": $goroot/bin/go missing after installing golang-1.19-go"
"$goroot/bin/go" version >>"$log"

# ---------------------------------------------------------------------------------------
step "private apt state for bookworm sources (system apt configuration untouched)"
# The mirror apt already uses: the first deb URI in the sources (deb822 or one-line style).
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)
if [ -z "$mirror" ]; then
  mirror=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || die "step \"$current_step\": no Debian mirror found in apt's sources"
echo "mirror: $mirror" >>"$log"
apt_dir=$work/apt
mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$apt_dir/sources.list.d/bookworm.list" <<EOF
deb [signed-by=$keyring] $mirror bookworm main
deb-src [signed-by=$keyring] $mirror bookworm main
EOF
apt_opts=(
  -o Dir::Etc::SourceList=/dev/null
  -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o APT::Sandbox::User=root
)
apt-get "${apt_opts[@]}" update >>"$log" 2>&1

# ---------------------------------------------------------------------------------------
src=$work/gopath/src/k8s.io/kubernetes
if [ ! -f "$work/.unpacked" ]; then
  rm -f "$work/.prepared"
  step "download the kubernetes $deb_version source package"
  dl=$work/download
  mkdir -p "$dl"
  (cd "$dl" && apt-get "${apt_opts[@]}" source --download-only "kubernetes=$deb_version") >>"$log" 2>&1
  echo "$orig_sha256  $dl/$orig_tarball" | sha256sum -c - >>"$log" 2>&1 ||
    die "step \"$current_step\": $orig_tarball does not have the expected sha256 $orig_sha256"

  step "unpack the upstream tree into a GOPATH"
  rm -rf "$work/gopath"
  mkdir -p "$(dirname "$src")"
  tar -xzf "$dl/$orig_tarball" -C "$(dirname "$src")"
  mv "$(dirname "$src")/kubernetes-1.20.2" "$src"
  [ -f "$src/cmd/kubeadm/kubeadm.go" ] || die "step \"$current_step\": the tarball holds no cmd/kubeadm"

  step "replace vendored reflect2 v1.0.1 with Debian's v1.0.2 (v1.0.1 corrupts memory on go >= 1.18)"
  (cd "$dl" && apt-get "${apt_opts[@]}" download "$reflect2_pkg") >>"$log" 2>&1
  rm -rf "$dl/reflect2-deb"
  dpkg-deb -x "$dl"/"${reflect2_pkg}"_*.deb "$dl/reflect2-deb"
  reflect2_src=$dl/reflect2-deb/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -f "$reflect2_src/reflect2.go" ] || die "step \"$current_step\": no reflect2.go in $reflect2_pkg"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$src/vendor/github.com/modern-go/reflect2"
  # Sources only (the package also carries tests and docs that the build does not need).
  find "$reflect2_src" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' -o -name LICENSE \) \
    ! -name '*_test.go' -exec cp {} "$src/vendor/github.com/modern-go/reflect2/" \;
  dpkg-deb -f "$dl"/"${reflect2_pkg}"_*.deb Version >>"$log"
  touch "$work/.unpacked"
fi

# The environment of upstream 1.20's hack/run-in-gopath.sh: GOPATH mode, no modules.
export GOROOT=$goroot
export PATH=$goroot/bin:$work/bin:$PATH
export GOPATH=$work/gopath
export GO111MODULE=off
export GOPROXY=off
export GOCACHE=$gocache
export GOFLAGS=
export GOTOOLCHAIN=local
unset GOBIN
cd "$src"

if [ ! -f "$work/.prepared" ]; then
  step "build openapi-gen"
  mkdir -p "$work/bin"
  CGO_ENABLED=0 go build -o "$work/bin/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen >>"$log" 2>&1

  step "generate pkg/generated/openapi (as upstream's Makefile.generated_files does)"
  # The files (named on stdin) containing a pattern; xargs says 123 when some batch had none.
  files_with() { xargs -r grep -l -e "$1" || [ $? -eq 123 ]; }
  # Every directory with Go files (staging named as vendor/), every file with a +k8s: tag,
  # minus code-generator and sample-apiserver; the directories asking for openapi-gen.
  dirs=$(find -H . \( -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) \) \
    -type f -name '*.go' | sed 's|^./staging/src|vendor|; s|/[^/]*$||; s|^./||' | LC_ALL=C sort -u)
  # shellcheck disable=SC2086 # word splitting of the directory list is intended
  openapi_dirs=$(for d in $dirs; do find "$d" -maxdepth 1 -type f -name '*.go'; done |
    files_with '^// *+k8s:' |
    grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' |
    files_with '+k8s:openapi-gen=' | xargs -n1 dirname | LC_ALL=C sort -u)
  count=$(echo "$openapi_dirs" | wc -l)
  echo "openapi-gen input packages: $count" >>"$log"
  [ "$count" -eq 80 ] || die "step \"$current_step\": expected 80 packages with +k8s:openapi-gen tags, found $count"
  inputs=$(echo "$openapi_dirs" | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  openapi-gen --logtostderr \
    -i "$inputs" \
    -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$work/openapi-violations.report" >>"$log" 2>&1
  [ -s pkg/generated/openapi/zz_generated.openapi.go ] || die "step \"$current_step\": openapi-gen wrote nothing"
  # Upstream's own check that the inputs were right: the report equals the known list.
  diff "$work/openapi-violations.report" api/api-rules/violation_exceptions.list >>"$log" 2>&1 ||
    die "step \"$current_step\": openapi-gen's API rule report differs from api/api-rules/violation_exceptions.list (see $log)"
  touch "$work/.prepared"
fi

# ---------------------------------------------------------------------------------------
ldflags="-s -w -buildid="
for pkg in k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version k8s.io/kubernetes/vendor/k8s.io/component-base/version; do
  ldflags+=" -X '$pkg.buildDate=$build_date' -X '$pkg.gitCommit=$git_commit' -X '$pkg.gitTreeState=clean'"
  ldflags+=" -X '$pkg.gitVersion=$version' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=20'"
done
mkdir -p "$work/out"
for bin in "${binaries[@]}"; do
  if [ -f "$work/out/$bin.done" ]; then
    continue
  fi
  step "build $bin"
  t0=$(date +%s)
  cgo=0
  [ "$bin" = kubelet ] && cgo=1 # as upstream: kubelet is the one cgo binary
  CGO_ENABLED=$cgo go build -tags selinux,notest -ldflags "$ldflags" -o "$work/out/$bin" "./cmd/$bin" >>"$log" 2>&1
  echo "$bin built in $(($(date +%s) - t0))s, $(stat -c %s "$work/out/$bin") bytes" >>"$log"
  touch "$work/out/$bin.done"
done

# ---------------------------------------------------------------------------------------
step "check the version the binaries report"
got=$("$work/out/kubeadm" version -o short 2>>"$log")
[ "$got" = "$version" ] || die "step \"$current_step\": kubeadm version says '$got', not $version"
"$work/out/kubelet" --version >>"$log" 2>&1
"$work/out/kubelet" --version | grep -qx "Kubernetes $version" ||
  die "step \"$current_step\": kubelet --version does not say Kubernetes $version"

step "install into $out"
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
for bin in "${binaries[@]}"; do
  install -m 0755 "$work/out/$bin" "$out.tmp/$bin"
done
{
  echo "version=$version"
  echo "source=kubernetes $deb_version (Debian bookworm), orig sha256 $orig_sha256"
  echo "git_commit=$git_commit"
  echo "go=$("$goroot/bin/go" version)"
  echo "built=$(date -u +%FT%TZ) in $(($(date +%s) - started))s"
} >"$out.tmp/BUILD-INFO"
touch "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
# The tree is 1.3 GB; the Go build cache stays for the next recipe.
rm -rf "$work"
step "done in $(($(date +%s) - started))s"
echo "$out"
