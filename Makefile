# Causeway: make | make test | make demo | make deps | make bench | make SAN=1
.DEFAULT_GOAL := all

BUILD   ?= build
CC      ?= gcc
CLANG   ?= clang
BPFTOOL ?= bpftool
ARCH    := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)

PKGS    := libbpf libcjson libcurl libsodium libnl-3.0 libnl-route-3.0 libnl-genl-3.0
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wcast-qual
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -D_GNU_SOURCE $(WARN) -Iinclude -I$(BUILD)/bpf $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lm
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

BPF_CFLAGS := -target bpf -D__TARGET_ARCH_$(ARCH) -O2 -g -Wall -Wextra -Werror \
              -Iinclude -Ibpf $(if $(MULTIARCH),-I/usr/include/$(MULTIARCH))

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRCS))
BPF_SKELS := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.skel.h,$(BPF_SRCS))
BPF_HDRS := $(wildcard bpf/lib/*.h include/causeway/*.h)

LIB_SRCS := $(wildcard lib/*.c)
LIB_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRCS))
CNI_SRCS := $(wildcard cni/*.c)
CNI_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(CNI_SRCS))
CNI_LIB_OBJS := $(filter-out $(BUILD)/cni/main.o,$(CNI_OBJS))
HELPER_SRCS := $(wildcard helper/*.c)
HELPER_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(HELPER_SRCS))
HELPER_LIB_OBJS := $(filter-out $(BUILD)/helper/main.o,$(HELPER_OBJS))

TOOLS := $(patsubst test/tools/%.c,$(BUILD)/tools/%,$(wildcard test/tools/*.c))
UNIT_TESTS := $(patsubst test/unit/%.c,$(BUILD)/test/%,$(wildcard test/unit/test_*.c))
BPF_TESTS := $(patsubst test/bpf/%.c,$(BUILD)/test/%,$(wildcard test/bpf/test_*.c))

GO_ENV := GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$(abspath $(BUILD))/gocache GOFLAGS=

all: $(BUILD)/causeway $(BUILD)/causeway-helper $(BUILD)/cnirunner $(TOOLS) \
     $(BUILD)/bench/floor-attach

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(BPFTOOL) gen skeleton $< name $* > $@.tmp && mv $@.tmp $@

$(BUILD)/%.o: %.c $(BPF_SKELS) $(wildcard include/causeway/*.h cni/*.h helper/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libcauseway.a: $(LIB_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/causeway: $(CNI_OBJS) $(BUILD)/libcauseway.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/causeway-helper: $(HELPER_OBJS) $(BUILD)/libcauseway.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/cnirunner: $(wildcard test/cnirunner/*.go)
	@mkdir -p $(@D)
	cd test/cnirunner && $(GO_ENV) go build -o $(abspath $@) .

# The collect-metadata floor of test/bench/cross_node.py (not the datapath).
$(BUILD)/bench/floor.bpf.o: test/bench/floor.bpf.c
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/bench/floor.skel.h: $(BUILD)/bench/floor.bpf.o
	$(BPFTOOL) gen skeleton $< name floor_bpf > $@.tmp && mv $@.tmp $@

$(BUILD)/bench/floor-attach: test/bench/floor_attach.c $(BUILD)/bench/floor.skel.h \
			     $(BUILD)/libcauseway.a
	$(CC) $(CFLAGS) -I$(BUILD)/bench $(LDFLAGS) -o $@ $< $(BUILD)/libcauseway.a $(LDLIBS)

$(BUILD)/tools/%: test/tools/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS)

# Unit tests link the plugin's and the helper's objects (all but the mains)
# and the shared library.
$(BUILD)/test/%: test/unit/%.c $(CNI_LIB_OBJS) $(HELPER_LIB_OBJS) $(BUILD)/libcauseway.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Icni -Ihelper $(LDFLAGS) -o $@ $< $(CNI_LIB_OBJS) $(HELPER_LIB_OBJS) \
	  $(BUILD)/libcauseway.a $(LDLIBS) -lcmocka

$(BUILD)/test/%: test/bpf/%.c $(wildcard test/bpf/*.h) $(BUILD)/libcauseway.a $(BPF_SKELS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libcauseway.a $(LDLIBS) -lcmocka

# Tests that need a real etcd (test/etcd/fixture starts one).
$(BUILD)/test/etcd_%: test/etcd/test_%.c $(HELPER_LIB_OBJS) $(BUILD)/libcauseway.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Ihelper $(LDFLAGS) -o $@ $< $(HELPER_LIB_OBJS) $(BUILD)/libcauseway.a $(LDLIBS) -lcmocka

ETCD_TESTS := $(patsubst test/etcd/test_%.c,$(BUILD)/test/etcd_%,$(wildcard test/etcd/test_*.c))

tests: all $(UNIT_TESTS) $(BPF_TESTS) $(ETCD_TESTS) $(BUILD)/fuzz_conf $(BUILD)/conf-dump

$(BUILD)/conf-dump: test/golden/conf_dump.c $(CNI_LIB_OBJS) $(BUILD)/libcauseway.a
	$(CC) $(CFLAGS) -Icni $(LDFLAGS) -o $@ $< $(CNI_LIB_OBJS) $(BUILD)/libcauseway.a $(LDLIBS)

# libFuzzer needs clang; the harness includes the parser's .c directly.
$(BUILD)/fuzz_conf: test/fuzz/fuzz_conf.c cni/conf.c cni/args.c cni/error.c cni/result.c lib/addr.c lib/log.c
	@mkdir -p $(@D)
	$(CLANG) -std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	  -Iinclude -Icni $(PKG_CFLAGS) -o $@ test/fuzz/fuzz_conf.c $(PKG_LIBS) -lm

# The mesh store's record decoders and the etcd config parser.
$(BUILD)/fuzz_records: test/fuzz/fuzz_records.c helper/records.c helper/records.h lib/addr.c
	@mkdir -p $(@D)
	$(CLANG) -std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	  -Iinclude -Ihelper $(PKG_CFLAGS) -o $@ test/fuzz/fuzz_records.c $(PKG_LIBS) -lm

$(BUILD)/fuzz_etcdconf: test/fuzz/fuzz_etcdconf.c helper/etcdconf.c helper/etcdconf.h lib/util.c
	@mkdir -p $(@D)
	$(CLANG) -std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	  -Iinclude -Ihelper $(PKG_CFLAGS) -o $@ test/fuzz/fuzz_etcdconf.c $(PKG_LIBS) -lm

# The services/v1 record, and the Service and EndpointSlice readers.
$(BUILD)/fuzz_services: test/fuzz/fuzz_services.c helper/services.c helper/services.h \
			helper/records.c helper/records.h lib/addr.c
	@mkdir -p $(@D)
	$(CLANG) -std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	  -Iinclude -Ihelper $(PKG_CFLAGS) -o $@ test/fuzz/fuzz_services.c $(PKG_LIBS) -lm

tests: $(BUILD)/fuzz_records $(BUILD)/fuzz_etcdconf $(BUILD)/fuzz_services

deps:
	./scripts/deps.sh

test: tests
	./test/run

demo: all
	./scripts/demo.sh

bench: all
	./test/bench/run

install: all
	install -D -m 0755 $(BUILD)/causeway $(DESTDIR)/opt/cni/bin/causeway
	install -D -m 0755 $(BUILD)/causeway-helper $(DESTDIR)/usr/local/bin/causeway-helper

clean:
	rm -rf $(BUILD)

.PHONY: all tests test deps demo bench install clean
.SECONDARY:

# --- Kubernetes client (helper/k8s.c): the live test against the API
# stand-in (test/k8s/run starts kapi.py and drives this binary) and the
# libFuzzer harness of its parsers (seeds in test/fuzz/corpus/k8s).
$(BUILD)/test/k8s_live: test/k8s/test_k8s_live.c $(HELPER_LIB_OBJS) $(BUILD)/libcauseway.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Ihelper $(LDFLAGS) -o $@ $< $(HELPER_LIB_OBJS) $(BUILD)/libcauseway.a $(LDLIBS)

$(BUILD)/fuzz_k8s: test/fuzz/fuzz_k8s.c helper/k8s.c helper/k8s.h helper/loop.c helper/loop.h \
		   lib/addr.c lib/log.c lib/util.c
	@mkdir -p $(@D)
	$(CLANG) -std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	  -Iinclude -Ihelper $(PKG_CFLAGS) -o $@ test/fuzz/fuzz_k8s.c $(PKG_LIBS) -lm

tests: $(BUILD)/test/k8s_live $(BUILD)/fuzz_k8s
