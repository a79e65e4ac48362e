#!/bin/sh
# Cross-build the static libraries of the Windows upkit from the unpacked Debian sources.
#
#   tools/windows/build-libs.sh CC SRC_DIR OUT_DIR
#
# CC is the mingw-w64 compiler (x86_64-w64-mingw32-gcc-posix). OUT_DIR receives include/ and
# lib/ with liblua.a (Lua 5.4), liblfs.a (LuaFileSystem) and libcurl.a (Schannel, no other
# protocol libraries), and a .done stamp last, so an interrupted build is started again.
set -eu

cc=$1 src=$2 out=$3
host=x86_64-w64-mingw32
jobs=${JOBS:-2}
die() { echo "build-libs: $*" >&2; exit 1; }
one() { set -- "$src"/$1; [ -d "$1" ] || die "no source tree $1"; echo "$1"; }

src=$(cd "$src" && pwd)
lua=$(one 'lua5.4-*') lfs=$(one 'lua-filesystem-*') curl=$(one 'curl-*')
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out/.done"
mkdir -p "$out/include" "$out/lib" "$out/work"
ar=$host-ar

# Lua: the library's .c files (not lua.c, luac.c), as Debian's build compiles them
# (LUA_COMPAT_5_3); luaconf.h selects LUA_USE_WINDOWS from _WIN32 itself.
echo "build-libs: Lua ($lua)"
rm -rf "$out/work/lua" && mkdir -p "$out/work/lua"
for c in "$lua"/src/*.c; do
  case ${c##*/} in lua.c|luac.c) continue ;; esac
  "$cc" -std=gnu99 -O2 -Wall -DLUA_COMPAT_5_3 -c "$c" -o "$out/work/lua/$(basename "$c" .c).o"
done
rm -f "$out/lib/liblua.a"
$ar rcs "$out/lib/liblua.a" "$out"/work/lua/*.o
for h in lua.h luaconf.h lualib.h lauxlib.h; do cp "$lua/src/$h" "$out/include/"; done

echo "build-libs: LuaFileSystem ($lfs)"
rm -f "$out/lib/liblfs.a"
"$cc" -std=gnu99 -O2 -Wall -I"$out/include" -c "$lfs/src/lfs.c" -o "$out/work/lfs.o"
$ar rcs "$out/lib/liblfs.a" "$out/work/lfs.o"
cp "$lfs/src/lfs.h" "$out/include/"

# curl: Debian's series ends with the GnuTLS and NSS flavour patches, which its own rules
# unapply for the OpenSSL flavour; do the same. Maintainer mode is off, so the shipped
# configure is used as is.
echo "build-libs: libcurl ($curl), Schannel, static"
if [ ! -f "$curl/.upkit-flavour" ]; then
  for p in 99_nss.patch 90_gnutls.patch; do
    patch -s -R -p1 -d "$curl" < "$curl/debian/patches/$p" || die "cannot unapply $p"
  done
  touch "$curl/.upkit-flavour"
fi
rm -rf "$out/work/curl" && mkdir -p "$out/work/curl"
(cd "$out/work/curl" && CC=$cc "$curl/configure" -q --host=$host --prefix="$out" \
   --disable-shared --enable-static --with-schannel \
   --without-zlib --without-brotli --without-zstd --without-nghttp2 --without-ngtcp2 \
   --without-nghttp3 --without-libidn2 --without-libpsl --without-librtmp --without-libssh2 \
   --without-libssh --without-libgsasl --disable-ldap --disable-ldaps --disable-rtsp \
   --disable-dict --disable-telnet --disable-tftp --disable-pop3 --disable-imap --disable-smtp \
   --disable-gopher --disable-mqtt --disable-manual --disable-dependency-tracking \
   > "$out/work/curl-configure.log" 2>&1) ||
  { tail -30 "$out/work/curl-configure.log" >&2; die "curl configure failed (log: $out/work/curl-configure.log)"; }
make -s -C "$out/work/curl/lib" -j"$jobs" > "$out/work/curl-make.log" 2>&1 ||
  { tail -30 "$out/work/curl-make.log" >&2; die "curl build failed (log: $out/work/curl-make.log)"; }
make -s -C "$out/work/curl/lib" install > /dev/null
make -s -C "$out/work/curl/include" install > /dev/null

rm -rf "$out/work"
touch "$out/.done"
echo "build-libs: done ($out)"
