#!/usr/bin/env bash
# Builds the Debian package jailgate_VERSION_amd64.deb from this workspace and prints its path
# on stdout (everything else goes to stderr).
#
#   scripts/build-deb.sh [--bin-dir DIR] [--version VERSION] [--out DIR]
#
# --bin-dir DIR   package the gateway and jailgate-worker found there (stripped copies), e.g.
#                 target/debug; default: `cargo build --release --locked --workspace --bins`
#                 and target/release
# --version V     the package's version; default: the gateway crate's (Cargo.toml). A test
#                 builds a "newer" package with e.g. 0.1.0+up1 to try an upgrade.
# --out DIR       where the .deb goes; default: target/debian
# DEBFULLNAME and DEBEMAIL (as for dch) name the maintainer; default: Jailgate developers
# <jailgate@localhost> (lintian: bogus-mail-host).
#
# A staging tree and `dpkg-deb --build --root-owner-group`, not cargo-deb: cargo-deb would need
# a `cargo install` in CI (minutes on two cores), and this script shows every file the package
# holds. The sources are in packaging/debian/ (control template, maintainer scripts, conffiles,
# copyright, the systemd units); /etc/jailgate/jailgate.toml is examples/jailgate.toml with the
# package's jail and nginx's group; the man pages come from the clap definitions
# (gateway/examples/mangen.rs, clap_mangen), so `man gateway` matches `gateway --help`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKG=packaging/debian

log() { printf 'build-deb: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
# A folder given on the command line, from the caller's folder.
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

BIN_DIR='' VERSION='' OUT=$ROOT/target/debian
while [ $# -gt 0 ]; do
    case $1 in
    --bin-dir) BIN_DIR=$(absolute "${2:?--bin-dir DIR}"); shift 2 ;;
    --version) VERSION=${2:?--version VERSION}; shift 2 ;;
    --out) OUT=$(absolute "${2:?--out DIR}"); shift 2 ;;
    -h | --help) sed -n '2,15s/^# \{0,1\}//p' "$0" >&2; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done
cd "$ROOT"
for tool in dpkg-deb strip gzip objdump cargo; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

if [ -z "$VERSION" ]; then
    # "path+file:///.../gateway#0.1.0" (or "...#gateway@0.1.0")
    VERSION=$(cargo pkgid --offline -p gateway 2>/dev/null || cargo pkgid -p gateway)
    VERSION=${VERSION##*[#@]}
fi
[[ $VERSION =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "not a Debian version: $VERSION"
MAINTAINER="${DEBFULLNAME:-Jailgate developers} <${DEBEMAIL:-jailgate@localhost}>"

if [ -z "$BIN_DIR" ]; then
    log "cargo build --release --locked --workspace --bins"
    cargo build --release --locked --workspace --bins >&2
    BIN_DIR=$ROOT/target/release
fi
for bin in gateway jailgate-worker; do
    [ -x "$BIN_DIR/$bin" ] || die "$BIN_DIR/$bin is missing (build it, or give --bin-dir)"
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STAGE=$(mktemp -d "$OUT/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
R=$STAGE/root
DOC=$R/usr/share/doc/jailgate

# The binaries, side by side (the gateway runs the worker from beside its own executable),
# stripped: the release build keeps line tables, a debug build everything.
install -d -m 0755 "$R/usr/bin"
for bin in gateway jailgate-worker; do
    install -m 0755 "$BIN_DIR/$bin" "$R/usr/bin/$bin"
    strip --strip-unneeded --remove-section=.comment "$R/usr/bin/$bin"
done

# The systemd units.
install -d -m 0755 "$R/lib/systemd/system"
for unit in jailgate.service jailgate.socket jailgate-fastcgi.socket; do
    install -m 0644 "$PKG/$unit" "$R/lib/systemd/system/$unit"
done

# /etc/jailgate/jailgate.toml: the example with the package's jail, nginx's group trusted,
# and the sockets left to systemd. Each edit must apply: a changed example fails here.
install -d -m 0755 "$R/etc/jailgate"
CONF=$R/etc/jailgate/jailgate.toml
edit_conf() { # PATTERN REPLACEMENT: one line of the example, replaced
    grep -q "^$1\$" "$CONF" || die "examples/jailgate.toml has no line '$1'"
    sed -i "s|^$1\$|$2|" "$CONF"
}
cp examples/jailgate.toml "$CONF"
chmod 0644 "$CONF"
edit_conf 'jail = "/srv/jailgate"' 'jail = "/var/lib/jailgate/jail"'
edit_conf '#trusted-group = "www-data"' 'trusted-group = "www-data"'
cat - "$CONF" >"$STAGE/conf" <<'HEAD'
# The jailgate package's configuration. jailgate.service runs
# `gateway --config /etc/jailgate/jailgate.toml` and serves on the sockets systemd passes it:
# jailgate.socket (HTTP, /run/jailgate/http.sock) and jailgate-fastcgi.socket (FastCGI,
# /run/jailgate/fastcgi.sock), both of group www-data; so `listen` and `fastcgi` stay unset
# here. After an edit: `systemctl reload jailgate.service` (SIGHUP: no request fails).
# This is a conffile: upgrades keep your edits.

HEAD
cat "$STAGE/conf" >"$CONF"

# Documentation.
install -d -m 0755 "$DOC" "$DOC/examples/nginx"
install -m 0644 README.md SECURITY.md ARCHITECTURE.md "$DOC/"
install -m 0644 "$PKG/copyright" "$DOC/copyright"
install -m 0644 examples/nginx/proxy_pass.conf examples/nginx/fastcgi_pass.conf "$DOC/examples/nginx/"
install -d -m 0755 "$R/usr/share/lintian/overrides"
install -m 0644 "$PKG/lintian-overrides" "$R/usr/share/lintian/overrides/jailgate"
{
    printf 'jailgate (%s) unstable; urgency=medium\n\n' "$VERSION"
    printf '  * Built from the Jailgate workspace, git %s.\n\n' \
        "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf ' -- %s  %s\n' "$MAINTAINER" \
        "$(git log -1 --format=%aD 2>/dev/null || date -R)"
} | gzip -9n >"$DOC/changelog.Debian.gz"
chmod 0644 "$DOC/changelog.Debian.gz"

# Man pages, one per command (gateway.1, gateway-jail.1, gateway-jail-init.1, ...), from the
# clap definitions. The dev profile: the example needs the dev-dependencies, which the test
# build has compiled already.
log "man pages: cargo run --locked --example mangen -p gateway"
install -d -m 0755 "$STAGE/man" "$R/usr/share/man/man1"
cargo run --quiet --locked --example mangen -p gateway -- "$STAGE/man" >&2
for page in "$STAGE"/man/*.1; do
    gzip -9n -c "$page" >"$R/usr/share/man/man1/$(basename "$page").gz"
    chmod 0644 "$R/usr/share/man/man1/$(basename "$page").gz"
done
[ -f "$R/usr/share/man/man1/gateway.1.gz" ] || die "no gateway.1 from mangen"

# DEBIAN/: control (the newest glibc symbol version the binaries use as libc6's minimum),
# conffiles, maintainer scripts, md5sums.
LIBC6=$(objdump -T "$R/usr/bin/gateway" "$R/usr/bin/jailgate-worker" |
    grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
[ -n "$LIBC6" ] || die "no glibc symbol versions in the binaries"
install -d -m 0755 "$R/DEBIAN"
SIZE=$(du -sk --apparent-size "$R" | cut -f1)
grep -v '^#' "$PKG/control.in" |
    sed -e "s|@VERSION@|$VERSION|" -e "s|@INSTALLED_SIZE@|$SIZE|" -e "s|@LIBC6@|$LIBC6|" \
        -e "s|@MAINTAINER@|$MAINTAINER|" \
        >"$R/DEBIAN/control"
install -m 0644 "$PKG/conffiles" "$R/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$PKG/$script" "$R/DEBIAN/$script"
done
(cd "$R" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) >"$R/DEBIAN/md5sums"
chmod 0644 "$R/DEBIAN/md5sums"

DEB=$OUT/jailgate_${VERSION}_amd64.deb
dpkg-deb --build --root-owner-group -Zxz "$R" "$DEB" >&2
log "built $DEB"
echo "$DEB"
