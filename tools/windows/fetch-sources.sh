#!/bin/sh
# Fetch the Debian source packages pinned in tools/windows/sources.lock, check the SHA-256 of
# every file, and unpack them (Debian patches applied).
#
#   tools/windows/fetch-sources.sh LOCK DOWNLOAD_DIR UNPACK_DIR
#   tools/windows/fetch-sources.sh --relock LOCK DOWNLOAD_DIR > NEW_LOCK
#
# --relock fetches the newest version of each package the lock names and prints lock lines for
# it: the way to move the pins when the archive drops a version (review the diff before use).
#
# The deb-src entries are derived at run time from the system's own deb entries (same URIs,
# suites and components), written into a private apt configuration under DOWNLOAD_DIR/apt, so
# the system's apt setup is not changed and nothing is fetched from anywhere else. A file whose
# digest differs from the lock is a hard error: the build stops and the file is not unpacked.
set -eu

relock=
if [ "${1:-}" = --relock ]; then relock=1; shift; set -- "$1" "$2" "$2"; fi
[ $# -eq 3 ] || { echo "usage: $0 [--relock] LOCK DOWNLOAD_DIR [UNPACK_DIR]" >&2; exit 2; }
lock=$1 dl=$2 src=$3
mkdir -p "$dl"; [ -n "$relock" ] || mkdir -p "$src"
dl=$(cd "$dl" && pwd) src=$(cd "$src" && pwd)
apt_dir=$dl/apt

die() { echo "fetch-sources: $*" >&2; exit 1; }

# Lock lines: PACKAGE VERSION FILE SHA256 (comments and blank lines ignored).
entries() { grep -v '^[[:space:]]*#' "$lock" | grep -v '^[[:space:]]*$'; }
[ -n "$(entries)" ] || die "$lock lists no files"

# Every file of the lock present with its digest?  Prints PACKAGE=VERSION for each missing
# file; exits 1 (after the message) when a present file's digest differs.
missing() {
  list=$(entries)
  while read -r pkg ver file sum; do
    if [ ! -f "$dl/$file" ]; then echo "$pkg=$ver"; continue; fi
    got=$(sha256sum "$dl/$file" | cut -d' ' -f1)
    [ "$got" = "$sum" ] || die "$file: SHA-256 $got, but $lock pins $sum (remove the file to fetch it again)"
  done <<LIST
$list
LIST
}

# deb-src entries mirroring the deb entries of sources.list and sources.list.d.
write_sources() {
  rm -rf "$apt_dir/sources.list.d"
  mkdir -p "$apt_dir/sources.list.d" "$apt_dir/none" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  : > "$apt_dir/sources.list"
  if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' /etc/apt/sources.list >> "$apt_dir/sources.list"
  fi
  for f in /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >> "$apt_dir/sources.list"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: keep stanzas whose Types include deb; rewrite Types to deb-src.
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
         { if ($0 !~ /(^|\n)Types:[^\n]*(^|[ \t])deb([ \t]|\n|$)/) next;
           if ($0 ~ /(^|\n)Enabled:[ \t]*no/) next;
           out = "";
           n = split($0, lines, "\n");
           for (i = 1; i <= n; i++) {
             if (lines[i] ~ /^#/) continue;
             if (lines[i] ~ /^Types:/) lines[i] = "Types: deb-src";
             out = out lines[i] "\n";
           }
           printf "%s\n", out }' "$f" > "$apt_dir/sources.list.d/$(basename "$f")"
  done
  grep -qs . "$apt_dir/sources.list" "$apt_dir"/sources.list.d/* ||
    die "no deb entry found in the system's apt sources to derive deb-src entries from"
}

apt_opts() {
  echo "-o Dir::Etc::SourceList=$apt_dir/sources.list -o Dir::Etc::SourceParts=$apt_dir/sources.list.d" \
       "-o Dir::State::Lists=$apt_dir/lists -o Dir::Cache=$apt_dir/cache" \
       "-o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=$apt_dir/none" \
       "-o APT::Sandbox::User=root -o Debug::NoLocking=1"
}

if [ -n "$relock" ]; then
  write_sources
  # shellcheck disable=SC2046
  apt-get -qq $(apt_opts) update >&2 || die "apt-get update failed for the deb-src entries"
  new=$dl/relock
  rm -rf "$new"; mkdir -p "$new"
  echo "# Debian source packages of the Windows build: PACKAGE VERSION FILE SHA256."
  echo "# Written by tools/windows/fetch-sources.sh --relock; every file is checked before use."
  for pkg in $(entries | cut -d' ' -f1 | sort -u); do
    # shellcheck disable=SC2046
    (cd "$new" && apt-get -qq $(apt_opts) source --download-only "$pkg" >&2) || die "apt-get source $pkg failed"
    dsc=$(ls "$new"/"$pkg"_*.dsc | sort | tail -1)
    ver=$(sed -n 's/^Version: //p' "$dsc")
    for f in $(basename "$dsc") $(awk '/^Checksums-Sha256:/ { on = 1; next } /^[^ ]/ { on = 0 } on { print $3 }' "$dsc"); do
      echo "$pkg $ver $f $(sha256sum "$new/$f" | cut -d' ' -f1)"
    done
    rm -f "$new"/*
  done
  exit 0
fi

need=$(missing) || exit 1
if [ -n "$need" ]; then
  command -v apt-get >/dev/null || die "apt-get not found (the Windows build fetches Debian source packages)"
  write_sources
  echo "fetch-sources: apt-get update (deb-src, private lists in $apt_dir)"
  # shellcheck disable=SC2046
  apt-get -qq $(apt_opts) update || die "apt-get update failed for the deb-src entries"
  for pv in $(echo "$need" | sort -u); do
    echo "fetch-sources: apt-get source --download-only $pv"
    # shellcheck disable=SC2046
    (cd "$dl" && apt-get -qq $(apt_opts) source --download-only "$pv") ||
      die "apt-get source $pv failed: is the pinned version still in the archive? (fetch-sources.sh --relock prints a lock for the versions the archive has now)"
  done
  need=$(missing) || exit 1
  [ -z "$need" ] || die "files still missing after apt-get source: $need"
fi
echo "fetch-sources: every file matches $lock"

# Unpack each package once: DIR/PACKAGE-VERSION (dpkg-source checks the .dsc's own sums too).
entries | while read -r pkg ver file sum; do echo "$pkg $ver"; done | sort -u |
while read -r pkg ver; do
  dest=$src/$pkg-$ver
  [ -f "$dest/.unpacked" ] && continue
  rm -rf "$dest"
  dsc=$(entries | awk -v p="$pkg" -v v="$ver" '$1 == p && $2 == v && $3 ~ /\.dsc$/ { print $3 }')
  [ -n "$dsc" ] || die "$lock has no .dsc for $pkg $ver"
  (cd "$src" && dpkg-source -q -x "$dl/$dsc" "$dest") > "$src/$pkg.unpack.log" 2>&1 ||
    { cat "$src/$pkg.unpack.log" >&2; die "dpkg-source -x $dsc failed"; }
  touch "$dest/.unpacked"
  echo "fetch-sources: unpacked $pkg $ver"
done
