#!/usr/bin/env bash
# CI artifacts with Box, without a synced folder: a build job puts its dist/ into a box, a later job (on
# another runner, with nothing of the build left) gets it back. The same commands as
# examples/ci/github-actions.yml and examples/ci/gitlab-ci.yml: tests/e2e/test_artifacts.py runs this
# script against a real server and checks that both workflow files use these very commands.
#
# The environment gives (in CI: the job's variables, BOX_TOKEN as a secret):
#   BOX_SERVER  the server's URL         BOX_TOKEN  a token (box-server admin add-user, or a device's)
#   ARTIFACTS   OWNER/BOX, e.g. alice/ci-artifacts (put --create makes it on the first run)
#   BUILD_ID    the pipeline's number: each build gets its own folder builds/BUILD_ID
set -euo pipefail
: "${BOX_SERVER:?set BOX_SERVER}" "${BOX_TOKEN:?set BOX_TOKEN}" "${ARTIFACTS:?set ARTIFACTS=OWNER/BOX}"
: "${BUILD_ID:?set BUILD_ID}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- the build job ---
mkdir -p "$WORK/build/dist" && cd "$WORK/build"
echo "app, build $BUILD_ID" > dist/app.txt && echo "$BUILD_ID" > dist/VERSION   # stands for the real build
boxctl put dist "$ARTIFACTS/builds/$BUILD_ID" --create -m "build $BUILD_ID"

# --- a later job ---
mkdir -p "$WORK/deploy" && cd "$WORK/deploy"
boxctl get "$ARTIFACTS/builds/$BUILD_ID" dist
test "$(boxctl cat "$ARTIFACTS/builds/$BUILD_ID/VERSION")" = "$BUILD_ID"
diff -r "$WORK/build/dist" dist
echo "build $BUILD_ID fetched from $ARTIFACTS"
