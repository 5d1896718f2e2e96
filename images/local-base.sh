#!/usr/bin/env bash
# Make a local stand-in for a base image that cannot be pulled (no registry reachable), with buildah.
#
#   images/local-base.sh IMAGE_NAME
#
# The stand-in is Debian bookworm (debootstrap, minbase) with python3, python3-venv and the CA bundle:
# what both Dockerfiles need from their bases (they call python3 and apt-get only). It is tagged with
# the name the Dockerfile's FROM asks for, so `buildah bud` finds it locally and never tries a registry.
# It is not the named image (the real python:slim has its Python in /usr/local, CUDA images carry CUDA):
# images built on it are for tests and CPU node pools, and their sizes are measured on it.
set -euo pipefail
name=${1:?usage: images/local-base.sh IMAGE_NAME}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${FINETUNE_BASE_CACHE:-/var/tmp/finetune-images/rootfs-$suite}

if [ ! -x "$cache/usr/bin/python3" ]; then
  echo "making a $suite rootfs with debootstrap in $cache (about a minute)"
  rm -rf "$cache.tmp"
  mkdir -p "$(dirname "$cache")"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$cache.tmp" "$mirror" >"$cache.log" 2>&1 || { tail -20 "$cache.log"; exit 1; }
  # What a slim base leaves out: package caches and lists, docs, man pages, locales.
  rm -rf "$cache.tmp"/var/cache/apt/archives/*.deb "$cache.tmp"/var/lib/apt/lists/* \
         "$cache.tmp"/usr/share/doc/* "$cache.tmp"/usr/share/man/* "$cache.tmp"/usr/share/info/* \
         "$cache.tmp"/usr/share/locale/*
  mv "$cache.tmp" "$cache"
fi

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$ctr")
tar -C "$cache" -cf - . | tar -C "$root" -xf -
buildah umount "$ctr" >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --cmd /bin/bash --label "finetune.dev/local-base=debootstrap $suite" "$ctr"
buildah commit -q --rm "$ctr" "$name" >/dev/null
trap - EXIT
echo "local base $name: $(buildah images --format '{{.Size}}' "$name" | head -1)"
