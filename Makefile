# upkit: build, test, check, bench, demo, install.
# `make test` and `make demo` install missing Debian packages first (make deps).

PREFIX  ?= /usr/local
DESTDIR ?=
SHAREDIR = $(PREFIX)/share/upkit

CC      ?= cc
PKGS     = lua5.4 libcurl odbc libedit libcrypto
WARN     = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS  ?= -O2 -g
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(shell pkg-config --cflags $(PKGS)) \
	-DUPK_ODBC_VERSION='"$(shell pkg-config --modversion odbc)"' \
	-Ihost -Ibuild/gen
LFS_A    = $(shell $(CC) -print-file-name=liblua5.4-filesystem.a)
LIBS     = $(LFS_A) $(shell pkg-config --libs $(PKGS)) -lm -ldl -lpthread

# host/*_win.c are the Windows implementations (mk/windows.mk builds them); *_linux.c are Linux's.
SRC      = $(filter-out %_win.c,$(wildcard host/*.c))
HDR      = $(wildcard host/*.h)
OBJ      = $(SRC:host/%.c=build/obj/%.o)
ASAN_OBJ = $(SRC:host/%.c=build/asan/obj/%.o)
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# Debian packages: build, run, test and benchmark.
DEPS_BUILD = build-essential pkg-config liblua5.4-dev lua-filesystem-dev libcurl4-openssl-dev \
	unixodbc-dev unixodbc libedit-dev libssl-dev
DEPS_TEST  = lua5.4 perl libsqliteodbc odbc-postgresql postgresql sqlite3 python3 openssl \
	rsync curl tmux procps time util-linux nodejs
DEPS = $(DEPS_BUILD) $(DEPS_TEST)
# upkit.remote: the OpenSSH client it drives, and the servers its tests start
DEPS_TEST += openssh-client openssh-server

UPKIT    = build/upkit
PROVE    = prove -j2 --timer --exec '$(CURDIR)/tests/lib/runtest'
TESTS    = $(sort $(wildcard tests/*.lua))
# The scripted SQL Server ODBC driver the tests load (test code, never installed).
FAKEMSSQL = build/test/fakemssql.so

.PHONY: all deps test check fuzz bench demo install uninstall sandbox repl clean

all: $(UPKIT)

# $(call install_missing,PACKAGES): apt-get install those not installed yet.
install_missing = missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make deps: all packages present"; fi

deps:
	@$(call install_missing,$(DEPS))
	@# npm packages of the contract tests, at the versions package-lock.json pins
	@command -v npm >/dev/null || { if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends npm; }
	@cd tests/contract && if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then \
	  npm ci --no-audit --no-fund --loglevel=error && touch node_modules; fi

build/gen/modules.h: $(SRC)
	@mkdir -p $(@D)
	@grep -ho '^int luaopen_upkit_[a-z0-9_]*(lua_State' $(SRC) | \
	  sed 's/^int luaopen_upkit_\([a-z0-9_]*\)(lua_State/UPK_MODULE(\1)/' | sort -u > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

# The installed share directory is compiled in; rewrite it when PREFIX changes.
build/gen/config.h: FORCE
	@mkdir -p $(@D)
	@echo '#define UPKIT_SHARE "$(SHAREDIR)"' > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

.PHONY: FORCE
FORCE:

build/obj/%.o: host/%.c $(HDR) build/gen/modules.h build/gen/config.h
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -c $< -o $@

build/asan/obj/%.o: host/%.c $(HDR) build/gen/modules.h build/gen/config.h
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -O1 -g $(SAN) -c $< -o $@

$(UPKIT): $(OBJ)
	$(CC) $(CFLAGS) -o $@ $(OBJ) $(LIBS) -Wl,-E

$(FAKEMSSQL): tests/odbcdrv/fakemssql.c
	@mkdir -p $(@D)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) -O1 -g -fPIC -shared -fvisibility=hidden -Wl,-Bsymbolic \
	  $(shell pkg-config --cflags odbc libcjson) -o $@ $< $(shell pkg-config --libs libcjson)

build/asan/upkit: $(ASAN_OBJ)
	$(CC) $(SAN) -o $@ $(ASAN_OBJ) $(LIBS) -Wl,-E

test: deps
	@$(MAKE) --no-print-directory $(UPKIT) $(FAKEMSSQL)
	UPKIT_BIN=$(CURDIR)/$(UPKIT) $(PROVE) $(TESTS)

# The sanitizers' settings for check and fuzz: leaks reported (known library ones suppressed),
# the first error ends the run.
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:suppressions=$(CURDIR)/tests/lib/lsan.supp \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lib/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

check: deps
	@$(MAKE) --no-print-directory build/asan/upkit $(FAKEMSSQL)
	UPKIT_BIN=$(CURDIR)/build/asan/upkit UPKIT_SANITIZED=1 $(SAN_ENV) $(PROVE) $(TESTS)

# The JSON decoder's fuzz test (also run, for a few seconds, by check) for longer under the sanitizers.
FUZZ_SECONDS ?= 60
fuzz: deps
	@$(MAKE) --no-print-directory build/asan/upkit
	UPKIT_FUZZ_SECONDS=$(FUZZ_SECONDS) $(SAN_ENV) build/asan/upkit run tests/json_fuzz.lua

bench: deps
	@$(MAKE) --no-print-directory $(UPKIT)
	UPKIT_BIN=$(CURDIR)/$(UPKIT) $(UPKIT) run tests/bench/run.lua

demo: deps
	@$(MAKE) --no-print-directory $(UPKIT)
	$(UPKIT) run scripts/demo.lua

# A simulated Octopus site on loopback (main server, download site, a second machine for a clone);
# it writes $SANDBOX_DIR/site.lua for README's walkthrough. Ctrl-C stops everything it started.
sandbox: deps
	@$(MAKE) --no-print-directory $(UPKIT)
	python3 tests/sim/octosim.py sandbox --dir $${SANDBOX_DIR:-build/sandbox}

repl: $(UPKIT)
	$(UPKIT) repl

install: $(UPKIT)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SHAREDIR)
	install -m 0755 $(UPKIT) $(DESTDIR)$(PREFIX)/bin/upkit
	cp -R lua scripts $(DESTDIR)$(SHAREDIR)/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/upkit
	rm -rf $(DESTDIR)$(SHAREDIR)

clean:
	rm -rf build

# The Windows build: deps-windows, windows-libs, test-windows (see mk/windows.mk).
include mk/windows.mk
