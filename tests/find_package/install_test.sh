#!/usr/bin/env bash
# Installs the build tree into a temporary prefix and builds the find_package consumer against it.
set -euo pipefail
build_dir=$1
src_dir=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build_dir" --prefix "$tmp/prefix" > /dev/null
cmake -S "$src_dir" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" > /dev/null
cmake --build "$tmp/consumer" > /dev/null
"$tmp/consumer/find_package_consumer"
test -f "$tmp/prefix/include/commcare/engine.h"
# A C host program built with pkg-config alone against the installed C ABI.
pcdir=$(dirname "$(find "$tmp/prefix" -name libcommcare.pc)")
libdir=$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=libdir libcommcare)
# shellcheck disable=SC2046
cc -std=c99 -Wall -Werror "$src_dir/../../examples/c/quickstart.c" -o "$tmp/pc_quickstart" \
  $(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs libcommcare) \
  -Wl,-rpath,"$libdir"
(cd "$tmp" && ./pc_quickstart > /dev/null)
echo "pkg-config host program works"
test -x "$tmp/prefix/bin/commcare"
echo "installed package works"
