#!/usr/bin/env bash
# Fetch the pinned Apache Kafka jars (deploy/kafka/pom.xml) into $1/libs with Maven, installing a
# JRE 17 and Maven with apt-get when they are missing. When that cannot be done it says why and
# exits 0: `itinerant up` then falls back to the Tansu development broker (docs/brokers.md).
set -uo pipefail
home=${1:-.kafka}
here=$(cd "$(dirname "$0")" && pwd)

fallback() {
  echo "warning: Apache Kafka could not be installed: $1" >&2
  echo "warning: \`itinerant up\` will use the Tansu development broker (memory only, see docs/brokers.md);" >&2
  echo "warning: install Java 17+ and Maven, then run \`make install\` again for Apache Kafka." >&2
  exit 0
}

java_major() {
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*/\1 \3/p' | head -n 1 |
    awk '{ print ($1 == 1 ? $2 : $1) }'
}

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then return 1; fi
  if [ "$(id -u)" != 0 ]; then return 1; fi
  echo "installing $* with apt-get (needed to fetch and run Apache Kafka)"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  apt_install openjdk-17-jre-headless || fallback "no Java 17 or newer, and apt-get could not install openjdk-17-jre-headless"
fi
major=$(java_major)
[ -n "$major" ] && [ "$major" -ge 17 ] || fallback "java is version ${major:-unknown}; Kafka 4 needs 17 or newer"
if ! command -v mvn >/dev/null 2>&1; then
  apt_install maven || fallback "no Maven (mvn), and apt-get could not install it"
fi

version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
echo "fetching Apache Kafka $version (about 45 MB of jars) with Maven into $home/libs"
rm -rf "$home/libs.new"
mkdir -p "$home"
if ! mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$(cd "$home" && pwd)/libs.new" -DincludeScope=runtime; then
  rm -rf "$home/libs.new"
  fallback "Maven could not fetch org.apache.kafka:kafka_2.13:$version (is Maven Central reachable?)"
fi
rm -rf "$home/libs"
mv "$home/libs.new" "$home/libs"
du -sh "$home/libs" | awk -v v="$version" '{ print "Apache Kafka " v " installed: " $1 " in " $2 }'
touch "$home/.installed"
