#!/usr/bin/env bash
# Build, cache and import local Docker base images for the multi-host tests and
# benchmarks, with no registry: debootstrap a Debian root filesystem from the
# machine's own apt mirror, tar it, `docker import` it.
#
#   .ci/base-image.sh pgkeel    -> pgkeel-base:bookworm
#   .ci/base-image.sh patroni   -> pgkeel-patroni-base:bookworm
#
# The rootfs tarball is cached in $PGKEEL_IMAGE_CACHE (default
# ~/.cache/pgkeel/images) under a hash of the recipe; the image carries the same
# hash as the label pgkeel.recipe, so a second run does nothing.
# PGKEEL_DEBIAN_MIRROR overrides the mirror read from /etc/apt.
set -euo pipefail

# Bump when anything below changes what ends up in the rootfs, or to pick up
# a new Debian point release (the hash does not see the mirror's contents).
RECIPE=1
SUITE=bookworm
# postgresql-contrib-15 is not a package on bookworm: postgresql-15 provides it.
# pgbackrest: the WAL archive and backups of a cluster with [backup].
COMMON=(ca-certificates iproute2 procps tini curl
        postgresql-15 postgresql-client-15 etcd-server etcd-client pgbackrest)
# Patroni's etcd3 DCS talks to the v3 gRPC gateway over urllib3 but imports
# python-etcd (python3-etcd) for its client base classes; python3-etcd3 is unused.
PATRONI=(patroni python3-etcd python3-psycopg2)

say() { echo "base image: $*" >&2; }
die() { echo "base image: error: $*" >&2; exit 1; }

case "${1:-}" in
  pgkeel)  TAG=pgkeel-base:$SUITE;         PKGS=("${COMMON[@]}") ;;
  patroni) TAG=pgkeel-patroni-base:$SUITE; PKGS=("${COMMON[@]}" "${PATRONI[@]}") ;;
  *) die "usage: $0 pgkeel|patroni" ;;
esac
NAME=$1

docker info >/dev/null 2>&1 || die "docker is not reachable ('docker info' failed).
  Start the daemon (systemctl start docker, or 'dockerd &' where there is no systemd),
  or point DOCKER_HOST at it, and check this user may open /var/run/docker.sock."

HASH=$(printf '%s\n' "$RECIPE" "$SUITE" "$NAME" "${PKGS[@]}" | sha256sum | cut -c1-16)
CACHE=${PGKEEL_IMAGE_CACHE:-$HOME/.cache/pgkeel/images}
TARBALL=$CACHE/$NAME-$HASH.tar
mkdir -p "$CACHE"

# Two concurrent runs for the same image would debootstrap twice; serialise them.
exec 9>"$CACHE/$NAME.lock"
flock 9

current_label() {
  docker image inspect -f '{{ index .Config.Labels "pgkeel.recipe" }}' "$TAG" 2>/dev/null || true
}
if [[ "$(current_label)" == "$HASH" ]]; then
  say "$TAG is up to date (recipe $HASH)"
  exit 0
fi

# The first deb (not deb-src) URI serving $SUITE itself, from deb822 .sources
# files or one-line .list files, so no mirror name is ever written down here.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    awk -v suite="$SUITE" '
      function flush() { if (!done && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") { split(uris, u, " "); print u[1]; done = 1; exit } types = suites = uris = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^Types:/  { sub(/^Types:[[:space:]]*/, "");  types = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      /^URIs:/   { sub(/^URIs:[[:space:]]*/, "");   uris = $0 }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }'
  done
}

build_rootfs() {
  [[ $(id -u) == 0 ]] || die "debootstrap needs root; run as root (or via sudo)"
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; } \
      || die "could not install debootstrap with apt-get"
  fi
  local mirror=${PGKEEL_DEBIAN_MIRROR:-}
  [[ -n $mirror ]] || mirror=$(apt_mirror | sed -n 1p)  # not head: SIGPIPE + pipefail
  [[ -n $mirror ]] || die "no deb source for $SUITE in /etc/apt; set PGKEEL_DEBIAN_MIRROR"

  # Build next to the cache (same filesystem, so the final mv is atomic) and
  # never leave a half-made rootfs or tarball behind, even on Ctrl-C.
  WORK=$(mktemp -d "$CACHE/.build-$NAME.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  local root=$WORK/rootfs log=$WORK/debootstrap.log
  say "debootstrap $SUITE for $NAME (about 2 min; log in $log while it runs)"
  local include
  include=$(IFS=,; echo "${PKGS[*]}")
  if ! debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$mirror" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "debootstrap failed (see above)"
  fi

  # The postinst creates a "main" cluster; tests and benchmarks initdb or
  # pg_basebackup their own data directories, so drop it.
  rm -rf "$root/etc/postgresql/15/main" "$root/var/lib/postgresql/15/main"
  # As debootstrap does while it runs: a package installed by a later
  # Dockerfile RUN step must not try to start its daemon during the build.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  # Docs, man pages and translations are ~80 MB nobody reads here (LANG is
  # C.UTF-8); copyright files stay. dpkg keeps later RUN installs as lean.
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*/*' >"$root/etc/dpkg/dpkg.cfg.d/01-pgkeel-nodoc"
  find "$root/usr/share/doc" ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/locale" \
    -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
         "$root"/var/cache/debconf/*-old "$root"/var/log/*.log \
         "$root"/var/log/apt/* "$root"/var/log/postgresql/* "$root"/tmp/*
  # Keep the mirror's sources.list from debootstrap: a Dockerfile FROM this
  # image can still `apt-get update && apt-get install` what it lacks.

  say "packing rootfs"
  tar -C "$root" --numeric-owner -cf "$WORK/rootfs.tar" .
  mv "$WORK/rootfs.tar" "$TARBALL"
  # Older recipes of this image are useless now.
  find "$CACHE" -maxdepth 1 -name "$NAME-*.tar" ! -name "$NAME-$HASH.tar" -delete
}

cleanup() {
  [[ -n ${WORK:-} && -d $WORK ]] || return 0
  # debootstrap mounts proc/sys inside the target; unmount before deleting.
  findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$WORK"
}

if [[ -f $TARBALL ]]; then
  say "rootfs cached ($TARBALL)"
else
  build_rootfs
fi

say "importing $TAG"
OLD_ID=$(docker image inspect -f '{{ .Id }}' "$TAG" 2>/dev/null || true)
docker import \
  --change "LABEL pgkeel.recipe=$HASH" \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  "$TARBALL" "$TAG" >/dev/null
# The image this replaced is now untagged; drop it unless something still uses it.
[[ -z $OLD_ID ]] || docker rmi "$OLD_ID" >/dev/null 2>&1 || true
say "$TAG ready ($(docker image inspect -f '{{ .Size }}' "$TAG" | awk '{ printf "%d MB", $1 / 1e6 }'))"
