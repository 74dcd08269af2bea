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
test -x "$tmp/prefix/bin/commcare"
echo "installed package works"
