#!/usr/bin/env bash
# The real VS Code that tests/editors/test_vscode.py drives, installed without reaching anything
# but Debian's and npm's registries: code-server 4.100.3 (VS Code 1.100.3, the last release for
# Node 20) and puppeteer-core from tests/editors/vscode/package-lock.json, Debian's Chromium.
# Idempotent: apt packages already there and an install matching the lockfile are skipped; npm's
# cache (~/.npm) keeps the downloads between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/editors/vscode

# build-essential and libkrb5-dev build code-server's native modules against Node's headers
# (/usr/include/node); its @vscode/ripgrep takes Debian's rg instead of a download from GitHub.
missing=()
for pkg in build-essential libkrb5-dev ripgrep chromium fonts-dejavu-core; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "install-workbench: apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$dir/node_modules/.installed-$(cksum <"$dir/package-lock.json" | cut -d' ' -f1)"
if [ -e "$stamp" ]; then
  exit 0
fi
# @vscode/ripgrep 1.15.11's postinstall looks in this cache before it downloads ripgrep 13.0.0.
rgcache="${TMPDIR:-/tmp}/vscode-ripgrep-cache-1.15.11"
mkdir -p "$rgcache"
rgtar="$rgcache/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz"
if [ ! -s "$rgtar" ]; then
  tar -czf "$rgtar.tmp" -C /usr/bin rg
  mv "$rgtar.tmp" "$rgtar"
fi
echo "install-workbench: npm ci in $dir (code-server builds its native modules: minutes)"
(cd "$dir" && npm_config_nodedir=/usr npm_config_yes=true npm_config_unsafe_perm=true \
  npm ci --no-audit --no-fund --loglevel=error)
touch "$stamp"
