#!/usr/bin/env bash
# Packages every publishable crate of the workspace as `cargo publish` would, in dependency
# order, and builds each package from its own files (`cargo publish --workspace --dry-run`),
# then fails on any warning cargo printed besides the dry run's own "aborting upload".
#
#   scripts/publish-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

# cargo unpacks each workspace crate it packages into a local registry under
# $CARGO_HOME/registry/src/-<hash>/ and reuses an unpacked copy of the same name and version
# on the next run, even if the sources changed since: remove our crates' copies first.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
for crate in dmxp dmxp-nostd dmxp-os dmxp-shm dmxp-memfd dmxp-file dmxp-inspect dmxp-cli; do
    rm -rf "$cargo_home"/registry/src/-*/"$crate"-[0-9]*
done

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
