# The Windows build (issue 15): upkit.exe cross-built with mingw-w64 from pinned Debian source
# packages, tested under Wine. Included by the Makefile; nothing here runs for `make`,
# `make test` or `make check`.
#
#   make deps-windows   install the cross compiler, Wine and dpkg-dev
#   make windows-libs   fetch + check the pinned sources, cross-build Lua, lfs, libcurl (cached)
#   make windows        build/windows/upkit.exe, with lua/ and scripts/ beside it
#   make dist-windows   build/windows/upkit-<version>-windows-x64.zip with SHA256SUMS
#   make test-windows   the toolchain and helper tests, then the TAP files under Wine

DEPS_WINDOWS = gcc-mingw-w64-x86-64-posix wine64 wine dpkg-dev patch python3

WIN_CC     = x86_64-w64-mingw32-gcc-posix
WIN_WINDRES = x86_64-w64-mingw32-windres
WIN_DIR    = build/windows
WIN_LOCK   = tools/windows/sources.lock
# The cache key: the pinned sources, the recipe and the compiler. A second build with the same
# key reuses the libraries (curl alone takes minutes).
WIN_KEY    = $(shell { cat $(WIN_LOCK) tools/windows/build-libs.sh; \
	$(WIN_CC) -dumpfullversion 2>/dev/null; } | sha256sum | cut -c1-16)
WIN_LIBDIR = $(WIN_DIR)/cache/$(WIN_KEY)
WIN_LIBS   = $(WIN_LIBDIR)/.done
WIN_SYSLIBS = -lws2_32 -lcrypt32 -lsecur32 -lbcrypt -ladvapi32 -lnormaliz -liphlpapi
WIN_CFLAGS = -std=c11 $(WARN) -O2 -DCURL_STATICLIB -I$(WIN_LIBDIR)/include

# Wine: 64-bit only, its own prefix under build/, no debug chatter, no Mono or Gecko installer.
WINE      := $(firstword $(wildcard /usr/lib/wine/wine64) wine64 wine)
WINE_ENV   = WINE=$(WINE) WINEPREFIX=$(CURDIR)/$(WIN_DIR)/wineprefix WINEDEBUG=-all \
	WINEDLLOVERRIDES='mscoree,mshtml='

.PHONY: deps-windows windows-libs windows dist-windows test-windows win-libs win-exe win-dist win-test

deps-windows:
	@$(call install_missing,$(DEPS_WINDOWS))

# Each entry point installs what it needs first, then runs a second make, so that WIN_KEY is
# computed with the compiler present.
windows-libs: deps-windows
	@$(MAKE) --no-print-directory win-libs

windows: deps-windows
	@$(MAKE) --no-print-directory win-exe

dist-windows: deps-windows
	@$(MAKE) --no-print-directory win-dist

test-windows: deps-windows
	@$(MAKE) --no-print-directory win-test

win-libs: $(WIN_LIBS)

# No prerequisites: the key in the folder's name already changes with everything the libraries
# are built from.
$(WIN_LIBS):
	tools/windows/fetch-sources.sh $(WIN_LOCK) $(WIN_DIR)/dl $(WIN_DIR)/src/$(WIN_KEY)
	tools/windows/build-libs.sh $(WIN_CC) $(WIN_DIR)/src/$(WIN_KEY) $(WIN_LIBDIR)

$(WIN_DIR)/smoke.exe: tests/windows/smoke.c $(WIN_LIBS)
	$(WIN_CC) $(WIN_CFLAGS) $< -o $@ -static -L$(WIN_LIBDIR)/lib -llfs -lcurl -llua $(WIN_SYSLIBS)

# The Windows helpers in C (paths, platform.h, command lines), without Lua.
WIN_UNIT_SRC = host/win_utf_win.c host/win_argv_win.c host/platform_win.c host/evp_win.c
$(WIN_DIR)/unit.exe: tests/windows/unit.c $(WIN_UNIT_SRC) host/win.h host/platform.h $(wildcard host/win/openssl/*.h)
	@mkdir -p $(@D)
	$(WIN_CC) $(WIN_CFLAGS) -Ihost -Ihost/win $< $(WIN_UNIT_SRC) -o $@ -static -lbcrypt

# forward.exe: the simulator's Windows-side stand-in (tests/windows/octopus.lua copies it as
# Octopus.Server.exe, msiexec.exe, sc.exe, filever.exe); test-only, never in the zip.
$(WIN_DIR)/forward.exe: tests/windows/forward.c
	@mkdir -p $(@D)
	$(WIN_CC) -std=c11 $(WARN) -O2 $< -o $@ -static -lws2_32 -lshell32

# upkit.exe: every host file but the POSIX implementations (and repl.c, libedit's binding:
# repl_win.c takes its place); host/win/compat.h first into each, host/win/ (the CNG
# openssl/*.h) on the include path. lua/ and scripts/ are found beside upkit.exe
# (upk_share_dir), so there is no config.h.
WIN_SRC   = $(filter-out %_linux.c host/repl.c,$(wildcard host/*.c))
WIN_OBJ   = $(WIN_SRC:host/%.c=$(WIN_DIR)/obj/%.o)
WIN_EXE   = $(WIN_DIR)/upkit.exe
WIN_EXE_CFLAGS = $(WIN_CFLAGS) -include host/win/compat.h -Ihost/win -Ihost -I$(WIN_DIR)/gen \
	-DUPK_ODBC_VERSION='"odbc32"'
WIN_EXE_LIBS = -L$(WIN_LIBDIR)/lib -llfs -lcurl -llua -lodbc32 -lversion $(WIN_SYSLIBS)

$(WIN_DIR)/gen/modules.h: $(WIN_SRC)
	@mkdir -p $(@D)
	@grep -ho '^int luaopen_upkit_[a-z0-9_]*(lua_State' $(WIN_SRC) | \
	  sed 's/^int luaopen_upkit_\([a-z0-9_]*\)(lua_State/UPK_MODULE(\1)/' | sort -u > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

$(WIN_DIR)/obj/%.o: host/%.c $(HDR) $(wildcard host/win/*.h host/win/openssl/*.h) \
		$(WIN_DIR)/gen/modules.h $(WIN_LIBS)
	@mkdir -p $(@D)
	$(WIN_CC) $(WIN_EXE_CFLAGS) -c $< -o $@

# The manifest (UTF-8 code page for the C runtime's narrow calls, long paths) and the version
# resource, from host/upkit.h's UPKIT_VERSION.
WIN_VERSION = $(shell sed -n 's/^\#define UPKIT_VERSION "\(.*\)"/\1/p' host/upkit.h)
WIN_RES = $(WIN_DIR)/obj/upkit.res.o
$(WIN_RES): host/win/upkit.rc host/win/upkit.manifest host/upkit.h
	@mkdir -p $(@D)
	cd host/win && $(WIN_WINDRES) -DUPK_VERSION='\"$(WIN_VERSION)\"' \
	  $(foreach n,1 2 3,-DUPK_V$(n)=$(word $(n),$(subst ., ,$(WIN_VERSION)))) \
	  upkit.rc -O coff -o $(CURDIR)/$@

$(WIN_EXE): $(WIN_OBJ) $(WIN_RES)
	$(WIN_CC) -o $@ $(WIN_OBJ) $(WIN_RES) -static $(WIN_EXE_LIBS)

# lua/ and scripts/ beside upkit.exe, copied again on every build (they change without it).
win-exe: $(WIN_EXE)
	@rm -rf $(WIN_DIR)/lua $(WIN_DIR)/scripts
	@cp -R lua scripts $(WIN_DIR)/

# The zip an operator copies to the server: upkit.exe, lua/, scripts/, README.md, SHA256SUMS.
WIN_ZIP = $(WIN_DIR)/upkit-$(WIN_VERSION)-windows-x64.zip
win-dist: win-exe
	rm -rf $(WIN_DIR)/dist && mkdir -p $(WIN_DIR)/dist/upkit
	cp -R $(WIN_EXE) $(WIN_DIR)/lua $(WIN_DIR)/scripts README.md $(WIN_DIR)/dist/upkit/
	cd $(WIN_DIR)/dist/upkit && find . -type f ! -name SHA256SUMS | LC_ALL=C sort | \
	  sed 's|^\./||' | xargs sha256sum > SHA256SUMS
	rm -f $(WIN_ZIP) && cd $(WIN_DIR)/dist && python3 -m zipfile -c ../$(notdir $(WIN_ZIP)) upkit
	@echo "dist-windows: $(WIN_ZIP)"

# The Linux build runs the same backup as upkit.exe in tests/windows/octopus.lua.
win-test: $(WIN_DIR)/smoke.exe $(WIN_DIR)/unit.exe $(WIN_DIR)/forward.exe win-dist $(UPKIT)
	$(WINE_ENV) UPKIT_LINUX_BIN=$(CURDIR)/$(UPKIT) tests/windows/run.sh $(WIN_DIR)
