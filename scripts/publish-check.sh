#!/usr/bin/env bash
# Packages every publishable crate of the workspace as `cargo publish` would, in dependency
# order, and builds each package from its own files (`cargo publish --workspace --dry-run`),
# then fails on any warning cargo printed besides the dry run's own "aborting upload".
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
cargo publish --workspace --dry-run --allow-dirty 2>&1 | tee "$log" | grep -E "^ *(Packaging|Packaged|Verifying)"
status=${PIPESTATUS[0]}
warnings=$(grep -E "^(warning|error)" "$log" | grep -v "aborting upload due to dry run")
if [ "$status" -ne 0 ] || [ -n "$warnings" ]; then
    echo "publish-check: FAILED (exit $status)"
    echo "$warnings"
    exit 1
fi
echo "publish-check: every publishable crate packages and builds from its package, no warning"
