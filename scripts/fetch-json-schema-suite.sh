#!/usr/bin/env bash
# Fetches the official JSON-Schema-Test-Suite (draft 2020-12 tests and remotes) from PyPI: it ships
# inside python-jsonschema's source distribution (folder json/). Pinned by version and sha256.
#
#   scripts/fetch-json-schema-suite.sh [DEST] [PYTHON]
#
# DEST defaults to .build/json-schema-test-suite (where the tests and `streamfirst conformance`
# look by default); PYTHON to python3. Does nothing when DEST already holds this version.
# Writes DEST/ORIGIN.txt, which the tests and `streamfirst conformance` print beside the pass rate.
set -euo pipefail

PACKAGE=jsonschema
VERSION=4.26.0
SHA256=0c26707e2efad8aa1bfc5b7ce170f3fccc2e4918ff85989ba9ffa9facb2be326
ORIGIN="PyPI $PACKAGE==$VERSION sdist (sha256 $SHA256), folders json/tests/draft2020-12 and json/remotes"

cd "$(dirname "$0")/.."
dest=${1:-.build/json-schema-test-suite}
python=${2:-python3}

if [ -f "$dest/ORIGIN.txt" ] && [ "$(cat "$dest/ORIGIN.txt")" = "$ORIGIN" ]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "$PACKAGE==$VERSION --hash=sha256:$SHA256" > "$work/requirements.txt"
echo "fetching the JSON-Schema-Test-Suite: $ORIGIN"
if ! "$python" -m pip download -q --no-deps --no-binary :all: --require-hashes \
    -r "$work/requirements.txt" -d "$work/dist" >"$work/pip.log" 2>&1; then
  cat "$work/pip.log" >&2
  echo "error: could not download $PACKAGE==$VERSION from PyPI with $python -m pip." >&2
  echo "  The JSON-Schema-Test-Suite tests need it. Fix the network/pip and rerun this script," >&2
  echo "  or point STREAMFIRST_JSON_SCHEMA_SUITE at a checkout of the suite (holding tests/ and remotes/)." >&2
  exit 1
fi

tar -xzf "$work/dist/$PACKAGE-$VERSION.tar.gz" -C "$work" \
  "$PACKAGE-$VERSION/json/tests/draft2020-12" "$PACKAGE-$VERSION/json/remotes" "$PACKAGE-$VERSION/json/LICENSE"
rm -rf "$dest"
mkdir -p "$dest/tests"
mv "$work/$PACKAGE-$VERSION/json/tests/draft2020-12" "$dest/tests/"
mv "$work/$PACKAGE-$VERSION/json/remotes" "$dest/"
mv "$work/$PACKAGE-$VERSION/json/LICENSE" "$dest/"
printf '%s\n' "$ORIGIN" > "$dest/ORIGIN.txt"
echo "JSON-Schema-Test-Suite in $dest ($(find "$dest/tests" -name '*.json' | wc -l) test files)"
