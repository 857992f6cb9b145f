#!/usr/bin/env bash
# Packages every publishable crate of the workspace as `cargo publish` would, in dependency
# order, and builds each package from its own files (`cargo publish --workspace --dry-run`),
# then fails on any warning cargo printed besides the dry run's own "aborting upload".
#
# dmxp-bridge is packaged (its manifest, metadata and file list are checked) but not built
# from its package: that build would compile Zenoh once more (about four minutes on two
# cores), and the bridge's sources are the workspace's, which clippy and the tests build.
# What a package build could catch beyond that is a file left out of the package, so the
# files the bridge's sources include are checked to be in its file list instead.
#
#   scripts/publish-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

# cargo unpacks each workspace crate it packages into a local registry under
# $CARGO_HOME/registry/src/-<hash>/ and builds it as a registry crate: an unpacked copy, or a
# build, of the same name and version is reused on a later run even if the sources changed.
# So: remove our crates' unpacked copies, and verify in a target directory of its own (the
# dependencies' builds are kept there) from which our crates' builds are removed.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
for crate in dmxp dmxp-nostd dmxp-os dmxp-shm dmxp-memfd dmxp-file dmxp-inspect dmxp-cli dmxp-bridge; do
    rm -rf "$cargo_home"/registry/src/-*/"$crate"-[0-9]*
done
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/publish-check
rm -rf "$target_dir/package" "$target_dir"/debug/.fingerprint/dmxp* "$target_dir"/debug/deps/*dmxp* \
    "$target_dir"/debug/build/dmxp*
export CARGO_TARGET_DIR=$target_dir

log=$(mktemp -t dmxp-publish.XXXXXX)
trap 'rm -f "$log"' EXIT
cargo publish --workspace --exclude dmxp-bridge --dry-run --allow-dirty 2>&1 | tee "$log" |
    grep -E "^ *(Packaging|Packaged|Verifying)"
status=${PIPESTATUS[0]}
# The bridge depends on dmxp, which is not on crates.io yet: packaging the workspace lets
# cargo resolve it against the packages it makes alongside.
# (Crates marked `publish = false` are left out, as `cargo publish` leaves them out.)
unpublished=$(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
print(" ".join("--exclude=" + p["name"] for p in json.load(sys.stdin)["packages"] if p["publish"] == []))')
# shellcheck disable=SC2086 # one word per --exclude
cargo package --workspace $unpublished --no-verify --allow-dirty >>"$log" 2>&1 || status=1
version=$(cargo metadata --format-version 1 --no-deps |
    sed 's/.*"name":"dmxp-bridge","version":"\([^"]*\)".*/\1/')
bridge_files=$(tar tzf "$target_dir/package/dmxp-bridge-$version.crate" 2>>"$log" |
    sed "s|^dmxp-bridge-$version/||")
for file in Cargo.toml Cargo.lock README.md LICENSE-MIT LICENSE-APACHE bridge.example.toml \
    src/main.rs src/lib.rs; do
    if ! grep -qx "$file" <<<"$bridge_files"; then
        echo "error: dmxp-bridge's package lacks $file" >>"$log"
    fi
done
warnings=$(grep -E "^(warning|error)" "$log" | grep -v "aborting upload due to dry run")
if [ "$status" -ne 0 ] || [ -n "$warnings" ]; then
    echo "publish-check: FAILED (exit $status)"
    echo "$warnings"
    exit 1
fi
echo "publish-check: every publishable crate packages, each but dmxp-bridge builds from its package, no warning"
