#!/usr/bin/env bash
# The Kotlin side, tested on the JVM (scripts/test.sh runs this after the cargo tests):
#   mobile/jvm           generates the bindings (scripts/bindings.sh), packs EfficientNet-Lite0 and
#                        LeNet-5 from ../shared/models with `nnzip pack`, runs the JUnit 5 tests against
#                        the real target/debug/libnnzip.so through JNA;
#   mobile/android-check compiles the Android app's Kotlin (and the nnzip library module's) against
#                        Robolectric's android-all jar;
#   mobile/app-robolectric runs the app's screen under Robolectric (Android 14, native graphics) with
#                        the real library and a packed EfficientNet-Lite0; screenshots in
#                        mobile/app-robolectric/target/screenshots/.
# The first run on a machine downloads about 600 MB into ~/.m2 (150 MB of it Robolectric's Android 14).
#
# Needs: Rust, JDK 17, Maven 3.8+ (plugins and jars come from Maven Central),
# ../shared/{models,images} (or NNZIP_SHARED), Debian's dataset-fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
SHARED="${NNZIP_SHARED:-$ROOT/../shared}"

# JDK 17 and Maven from Debian when missing (as root, or through sudo).
if ! command -v javac >/dev/null || ! command -v mvn >/dev/null; then
  echo "test-mobile.sh: installing JDK 17 and Maven from Debian"
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven
fi
[ -f "$SHARED/models/efficientnet_lite0.onnx" ] || { echo "test-mobile.sh: $SHARED/models/efficientnet_lite0.onnx not found: put shared/ beside the project or set NNZIP_SHARED" >&2; exit 1; }

mvn -B -ntp -f mobile/pom.xml test -Dnnzip.root="$ROOT" -Dnnzip.shared="$SHARED"
echo "test-mobile.sh: JVM tests passed, the Android app's Kotlin compiles and its screen works under Robolectric (reports: mobile/*/target/surefire-reports, screenshots: mobile/app-robolectric/target/screenshots)"
