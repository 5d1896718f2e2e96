#!/usr/bin/env bash
# `make images`: build the operator image and the trainer image.
#
# With a Docker engine (or BUILDER=podman) this is `docker build` of both Dockerfiles. Without one, as on
# the project's CI machines, it builds with buildah (`--isolation chroot`, no daemon); a base image that
# cannot be pulled is made locally by images/local-base.sh (debootstrap), and pip inside the build gets
# this machine's own pip configuration, mounted read-only for the build stage only.
#
# Settings (environment): TRAINER_VARIANT=cpu|cuda (cpu), OPERATOR_IMAGE, TRAINER_IMAGE, OPERATOR_BASE,
# TRAINER_BASE, TORCH_INDEX_URL, BUILDER=docker|podman|buildah.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
variant=${TRAINER_VARIANT:-cpu}
operator_image=${OPERATOR_IMAGE:-localhost/finetune-operator:$version}
operator_base=${OPERATOR_BASE:-python:3.11.11-slim-bookworm}
case "$variant" in
  cpu)  trainer_image=${TRAINER_IMAGE:-localhost/finetune-trainer:$version-cpu}
        trainer_base=${TRAINER_BASE:-debian:bookworm-slim}
        torch_index=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu} ;;
  cuda) trainer_image=${TRAINER_IMAGE:-localhost/finetune-trainer:$version}
        trainer_base=${TRAINER_BASE:-nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04}
        torch_index=${TORCH_INDEX_URL-} ;;
  *) echo "TRAINER_VARIANT must be cpu or cuda, not '$variant'" >&2; exit 2 ;;
esac

builder=${BUILDER:-}
if [ -z "$builder" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then builder=docker
  elif command -v buildah >/dev/null 2>&1; then builder=buildah
  else
    echo "make images needs a Docker engine, podman or buildah (Debian: apt-get install buildah debootstrap)" >&2
    exit 1
  fi
fi

# --- docker / podman: the Dockerfiles as they are ---------------------------------------------------
if [ "$builder" != buildah ]; then
  "$builder" build -t "$operator_image" --build-arg BASE_IMAGE="$operator_base" -f Dockerfile .
  "$builder" build -t "$trainer_image" --build-arg BASE_IMAGE="$trainer_base" \
    --build-arg TORCH_INDEX_URL="$torch_index" -f trainer_image/Dockerfile trainer_image
  exit 0
fi

# --- buildah, no daemon, maybe no registry ----------------------------------------------------------
# The name buildah gives a short reference (python:3.11 -> docker.io/library/python:3.11).
qualified() {
  local first=${1%%/*}
  if [ "$first" != "$1" ] && { [[ $first == *.* ]] || [[ $first == *:* ]] || [ "$first" = localhost ]; }; then echo "$1"
  elif [ "$first" = "$1" ]; then echo "docker.io/library/$1"
  else echo "docker.io/$1"; fi
}

ensure_base() {
  local name; name=$(qualified "$1")
  buildah inspect --type image "$name" >/dev/null 2>&1 && return 0
  if timeout 120 buildah pull -q "$name" >/dev/null 2>&1; then return 0; fi
  echo "base $name cannot be pulled here: making a local stand-in (images/local-base.sh)"
  images/local-base.sh "$name"
}

# This machine's pip configuration, merged from every file and PIP_* variable that pip reads, as one
# file for the build stage; with it go, read-only, the local paths it names (wheel folders, file://
# indexes, constraints, the CA bundle). It is mounted for RUN steps only, never copied into an image.
pipconf=$(mktemp -d)
trap 'rm -rf "$pipconf"' EXIT
mounts=(-v "$pipconf:/run/finetune-pip:ro")
python3 - "$pipconf/pip.conf" > "$pipconf/paths" <<'PY'
import configparser, os, re, subprocess, sys
listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
config = configparser.ConfigParser()
paths = set()
for line in listing.splitlines():
    match = re.match(r"^(:env:|[\w-]+)\.([\w-]+)='(.*)'$", line)
    if not match:
        continue
    section, key, value = match.groups()
    section = "global" if section == ":env:" else section
    if not config.has_section(section):
        config.add_section(section)
    config.set(section, key, value.replace("%", "%%"))
    for word in value.split():
        # A file:// index links its files relative to itself (../../files/...): mount its parent.
        path = os.path.dirname(word[len("file://"):].rstrip("/")) if word.startswith("file://") else word
        if path.startswith("/") and os.path.exists(path):
            paths.add(path)
with open(sys.argv[1], "w") as handle:
    config.write(handle)
print("\n".join(sorted(paths)))
PY
while IFS= read -r path; do
  [ -n "$path" ] && mounts+=(-v "$path:$path:ro")
done < "$pipconf/paths"
pip_args=(--build-arg PIP_CONFIG_FILE=/run/finetune-pip/pip.conf)

# A CPU torch that this machine's pip configuration already provides (a local wheel folder) is used as
# is: PyTorch's own index may be out of reach here.
if [ "$variant" = cpu ] && [ -n "$torch_index" ] && grep -qs . "$pipconf/paths" \
   && xargs -r -I{} find {} -maxdepth 1 -name 'torch-*+cpu-*.whl' < "$pipconf/paths" 2>/dev/null | grep -q .; then
  echo "CPU torch: from this machine's pip configuration (a local +cpu wheel), not $torch_index"
  torch_index=
fi

ensure_base "$operator_base"
ensure_base "$trainer_base"
bud=(buildah bud --isolation chroot --network host --layers --pull=never "${mounts[@]}" "${pip_args[@]}")

start=$(date +%s)
"${bud[@]}" -t "$operator_image" --build-arg BASE_IMAGE="$(qualified "$operator_base")" -f Dockerfile .
"${bud[@]}" -t "$trainer_image" --build-arg BASE_IMAGE="$(qualified "$trainer_base")" \
  --build-arg TORCH_INDEX_URL="$torch_index" -f trainer_image/Dockerfile trainer_image
echo "built in $(( $(date +%s) - start )) s:"
for image in "$operator_image" "$trainer_image"; do
  echo "  $image  $(buildah images --format '{{.Size}}' "$image" | head -1)"
done
