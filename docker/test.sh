#!/usr/bin/env bash
# Builds the CPU image and checks it: `wtal demo` in a container, then a two-node Ray cluster of
# two containers extracting ../shared/data/videos into a cache on a mounted volume. Also builds
# the GPU image's stages that need no CUDA. Slow (tens of minutes); not part of `make test`.
#
# Made for a machine without an image registry: Docker comes from Debian's docker.io package, the
# bookworm base image from debootstrap + `docker import`, builds use the host network, and pip
# inside a build gets the machine's CA bundle as a BuildKit secret (mounted only while pip runs,
# in no layer; the script checks that). Run as root: `docker/test.sh`. Environment knobs:
#   VIDEOS       videos for the cluster run (default: <repo>/../shared/data/videos)
#   WORK         scratch folder (default: /tmp/wtal-docker-test)
#   CA_BUNDLE    CA bundle handed to pip (default: /etc/ssl/certs/ca-certificates.crt)
#   TORCH_WHEEL  the CPU torch wheel for the build context (default: /opt/wheels/torch-2.13.0+cpu-*.whl)
#   OPENCV_CPU_BUILD=1  also compile the GPU image's OpenCV builder stage without CUDA (slow)
# Arguments pick phases (default all, in this order): cpu demo cluster gpu; `cpu` builds the image
# the later phases use (they reuse an existing wtal:cpu when `cpu` is not given).
set -euo pipefail
PHASES=" ${*:-cpu demo cluster gpu} "
want() { [[ $PHASES == *" $1 "* ]]; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
VIDEOS=$(cd "${VIDEOS:-$REPO/../shared/data/videos}" && pwd)
WORK=${WORK:-/tmp/wtal-docker-test}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
TORCH_WHEEL=${TORCH_WHEEL:-$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n 1)}
BASE_IMAGE=wtal-base:bookworm
MIRROR=http://deb.debian.org/debian
# Debian's docker.io client has BuildKit built in (`--secret`); newer clients need the buildx plugin.
DOCKER=/usr/bin/docker
export DOCKER_BUILDKIT=1

say() { echo "[docker/test.sh] $*"; }
fail() { say "FAIL: $*"; exit 1; }
mkdir -p "$WORK"
STARTED_DOCKERD=
cleanup() {
    $DOCKER rm -f wtal-head wtal-worker > /dev/null 2>&1 || true
    if [ -n "$STARTED_DOCKERD" ]; then
        kill "$STARTED_DOCKERD" 2> /dev/null && wait "$STARTED_DOCKERD" 2> /dev/null || true
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- docker, debootstrap
if [ ! -x /usr/sbin/dockerd ] || [ ! -x "$DOCKER" ] || ! command -v debootstrap > /dev/null; then
    say "installing docker.io and debootstrap from Debian"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap
fi
if ! $DOCKER info > /dev/null 2>&1; then
    say "starting dockerd (log: $WORK/dockerd.log)"
    /usr/sbin/dockerd > "$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do $DOCKER info > /dev/null 2>&1 && break; sleep 1; done
    $DOCKER info > /dev/null 2>&1 || fail "dockerd did not start (see $WORK/dockerd.log)"
fi
say "docker $($DOCKER version --format '{{.Server.Version}}')"

# ------------------------------------------------------------------- base image
if ! $DOCKER image inspect "$BASE_IMAGE" > /dev/null 2>&1; then
    say "debootstrap bookworm -> $BASE_IMAGE"
    start=$(date +%s)
    rm -rf "$WORK/rootfs"
    nice -n 10 debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || fail "debootstrap (see $WORK/debootstrap.log)"
    rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
    tar -C "$WORK/rootfs" -c . | $DOCKER import - "$BASE_IMAGE" > /dev/null
    rm -rf "$WORK/rootfs"
    say "base image made in $(( $(date +%s) - start )) s"
fi

size() { $DOCKER image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

build() {  # build TAG LOGNAME docker-build-args...: timed, logged, --network host, CA secret
    local tag=$1 name=$2 start
    shift 2
    start=$(date +%s)
    nice -n 10 $DOCKER build --network host --progress plain --secret "id=pip_cert,src=$CA_BUNDLE" \
        -t "$tag" "$@" "$REPO" > "$WORK/build-$name.log" 2>&1 || { tail -n 30 "$WORK/build-$name.log"; fail "build $name (see $WORK/build-$name.log)"; }
    say "built $tag in $(( $(date +%s) - start )) s, size $(size "$tag")"
}

# ------------------------------------------------------------------ CPU image
if want cpu; then
[ -f "$TORCH_WHEEL" ] || fail "no CPU torch wheel (set TORCH_WHEEL)"
mkdir -p "$REPO/docker/wheels"
rm -f "$REPO"/docker/wheels/*.whl
ln -f "$TORCH_WHEEL" "$REPO/docker/wheels/" 2> /dev/null || cp "$TORCH_WHEEL" "$REPO/docker/wheels/"
build wtal:cpu cpu -f "$REPO/docker/Dockerfile" --build-arg "BASE=$BASE_IMAGE"
grep -E "^#[0-9]+ [0-9.]+ (torch|cv2) " "$WORK/build-cpu.log" | sed 's/^#[0-9]* [0-9.]* /  /' || true

# The CA bundle's certificates that Debian's bundle lacks (a proxy's CA) must be in no layer.
$DOCKER run --rm --entrypoint cat wtal:cpu /etc/ssl/certs/ca-certificates.crt > "$WORK/image-ca.crt"
awk '/BEGIN CERT/{getline; print}' "$CA_BUNDLE" | sort -u > "$WORK/host-ca.lines"
awk '/BEGIN CERT/{getline; print}' "$WORK/image-ca.crt" | sort -u > "$WORK/image-ca.lines"
comm -23 "$WORK/host-ca.lines" "$WORK/image-ca.lines" > "$WORK/extra-ca.lines"
$DOCKER save wtal:cpu -o "$WORK/wtal-cpu.tar"
if [ -s "$WORK/extra-ca.lines" ]; then
    if grep -q -F -f "$WORK/extra-ca.lines" -a "$WORK/wtal-cpu.tar"; then fail "the build's CA bundle is in an image layer"; fi
    say "the $(wc -l < "$WORK/extra-ca.lines") certificate(s) only the build's CA bundle has are in no layer of wtal:cpu"
else
    say "the build's CA bundle adds no certificate to Debian's; nothing to look for in the layers"
fi
rm -f "$WORK/wtal-cpu.tar"
$DOCKER history --no-trunc --format '{{.CreatedBy}}' wtal:cpu | grep -q "run/secrets" && say "(layers mention /run/secrets only as the mount point in RUN lines)"
[ "$($DOCKER run --rm --entrypoint id wtal:cpu -u)" = 1000 ] || fail "the image does not run as uid 1000"
say "wtal:cpu runs as uid 1000"
fi

# ------------------------------------------------------------------ wtal demo
if want demo; then
say "wtal demo in a container (no network)"
start=$(date +%s)
$DOCKER run --rm --network none --shm-size 1g wtal:cpu demo --out /tmp/demo > "$WORK/demo.log" 2>&1 \
    || { tail -n 30 "$WORK/demo.log"; fail "wtal demo"; }
grep -E "mAP|^wrote" "$WORK/demo.log" | sed 's/^/  /'
say "demo took $(( $(date +%s) - start )) s"
fi

# ------------------------------------------------- two-node Ray cluster, extraction
if want cluster; then
CACHE=$WORK/cache
rm -rf "$CACHE" && mkdir -p "$CACHE" && chown 1000:1000 "$CACHE"
# A video's id is its file name without the extension, and two videos with one id are an error:
# the shared folder has mmaction2_test.avi and .mp4, so the cluster gets a copy of it in which a
# repeated id's later file is renamed <stem>_<ext>.<ext>.
VIDEO_COPY=$WORK/videos
rm -rf "$VIDEO_COPY" && mkdir -p "$VIDEO_COPY"
declare -A seen=()
for f in "$VIDEOS"/*; do
    [ -f "$f" ] || continue
    name=$(basename "$f") && stem=${name%.*} && ext=${name##*.}
    if [ -n "${seen[$stem]:-}" ]; then
        say "video id $stem is given twice ($ext and ${seen[$stem]}): the $ext copy is ${stem}_$ext.$ext"
        name=${stem}_$ext.$ext
    fi
    seen[$stem]=$ext
    cp "$f" "$VIDEO_COPY/$name"
done
# Loopback addresses 127.0.0.2 (head) and 127.0.0.3 (worker): Ray replaces 127.0.0.1 and
# "localhost" by the machine's routable address, any other 127.x address it keeps. On a loaded
# machine Ray's start-up waits are too short, hence the longer raylet wait.
node() {  # node NAME IP ray-start-args...: a Ray node container on the host network
    local name=$1 ip=$2
    shift 2
    $DOCKER run -d --name "$name" --network host --shm-size 1g -e RAY_raylet_start_wait_time_s=180 \
        -v "$VIDEO_COPY:/data/videos:ro" -v "$CACHE:/cache" \
        --entrypoint ray wtal:cpu start --block --node-ip-address "$ip" --num-cpus 1 --num-gpus 0 \
        --object-store-memory 200000000 --disable-usage-stats "$@" > /dev/null
}
alive_nodes() {
    $DOCKER exec wtal-head python -c "import ray; ray.init(address='127.0.0.2:6390', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))" 2> /dev/null | tail -n 1 || true
}
wait_nodes() {  # wait_nodes N CONTAINER: until N nodes are alive, or CONTAINER has exited
    local alive=0
    for _ in $(seq 120); do
        alive=$(alive_nodes)
        [ "$alive" = "$1" ] && return 0
        [ "$($DOCKER inspect -f '{{.State.Running}}' "$2")" = true ] || break
        sleep 2
    done
    $DOCKER logs "$2" 2>&1 | tail -n 5
    fail "the Ray cluster has ${alive:-no} live node(s), expected $1"
}
node wtal-head 127.0.0.2 --head --port 6390 --include-dashboard false \
    --node-manager-port 6391 --object-manager-port 6392 --metrics-export-port 6393 --runtime-env-agent-port 6394 \
    --dashboard-agent-grpc-port 6395 --dashboard-agent-listen-port 6396 --min-worker-port 20000 --max-worker-port 20999
wait_nodes 1 wtal-head
node wtal-worker 127.0.0.3 --address 127.0.0.2:6390 \
    --node-manager-port 6401 --object-manager-port 6402 --metrics-export-port 6403 --runtime-env-agent-port 6404 \
    --dashboard-agent-grpc-port 6405 --dashboard-agent-listen-port 6406 --min-worker-port 21000 --max-worker-port 21999
wait_nodes 2 wtal-worker
say "Ray cluster: head (127.0.0.2) and worker (127.0.0.3) containers, 2 live nodes"

n_videos=$(find "$VIDEO_COPY" -maxdepth 1 -type f | wc -l)
extract() { $DOCKER exec wtal-head wtal extract /data/videos --cache /cache --ray-address 127.0.0.2:6390 \
    --crop-size 56 --flow-preset fast --device cpu; }
start=$(date +%s)
set +e
extract > "$WORK/extract.log" 2>&1
rc=$?
set -e
grep -E "^extracted|^videos per Ray node|^  failed|^error" "$WORK/extract.log" | sed 's/^/  /'
say "extract took $(( $(date +%s) - start )) s, exit status $rc (1: a video failed)"
[ "$rc" = 1 ] || fail "wtal extract exit status $rc, expected 1 (one broken video)"
grep -q -E "extracted $((n_videos - 1)), skipped 0 already cached, failed 1 of $n_videos videos" "$WORK/extract.log" \
    || fail "extract summary"
nodes=$(grep "^videos per Ray node:" "$WORK/extract.log" | tr ',' '\n' | grep -c -E "[0-9a-f]{8} [0-9]+") || true
[ "$nodes" = 2 ] || fail "videos ran on $nodes Ray node(s), expected 2"

$DOCKER exec wtal-head wtal cache ls /cache --json > "$WORK/ls.jsonl"
python3 - "$WORK/ls.jsonl" "$CACHE" "$n_videos" << 'EOF'
import json, pathlib, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
cache, n = pathlib.Path(sys.argv[2]), int(sys.argv[3])
ids = [r["video_id"] for r in rows]
assert len(ids) == len(set(ids)) == n, f"{len(ids)} records for {n} videos"
failed = [r for r in rows if r["status"] != "ok"]
assert [r["video_id"] for r in failed] == ["decord_corrupted"], failed
names = sorted(p.name for p in (cache / "entries").iterdir())
expected = sorted([f"{r['key']}.json" for r in rows] + [f"{r['key']}.npy" for r in rows if r["status"] == "ok"])
assert names == expected, f"entries {names} != {expected}"
print(f"  {n} videos, {n - 1} ok entries, each once; decord_corrupted recorded as failed: {failed[0]['reason'][:90]}")
EOF
$DOCKER exec wtal-head wtal cache verify /cache | tail -n 1 | grep -q " 0 problem(s)" || fail "wtal cache verify"
say "wtal cache verify: 0 problem(s)"
start=$(date +%s)
set +e
extract > "$WORK/extract2.log" 2>&1
set -e
grep -q "skipped $((n_videos - 1)) already cached" "$WORK/extract2.log" || fail "re-run did not skip the finished videos"
say "re-run: $(grep '^extracted' "$WORK/extract2.log") in $(( $(date +%s) - start )) s"
$DOCKER rm -f wtal-head wtal-worker > /dev/null
fi

# ------------------------------------------------ GPU image: the stages that need no CUDA
if want gpu; then
build wtal-gpu:opencv-source opencv-source -f "$REPO/docker/Dockerfile.gpu" --target opencv-source \
    --build-arg "SOURCE_BASE=$BASE_IMAGE"
if [ "${OPENCV_CPU_BUILD:-0}" = 1 ]; then
    build wtal-gpu:opencv-nocuda opencv-nocuda -f "$REPO/docker/Dockerfile.gpu" --target opencv \
        --build-arg "SOURCE_BASE=$BASE_IMAGE" --build-arg "CUDA_DEVEL=$BASE_IMAGE" --build-arg WITH_CUDA=OFF
    grep -E "^#[0-9]+ [0-9.]+ cv2 " "$WORK/build-opencv-nocuda.log" | sed 's/^#[0-9]* [0-9.]* /  /' || true
fi
fi

$DOCKER image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^wtal" | sed 's/^/  image /'
say "all checks passed"
