#!/bin/sh
# Writes debian/copyright (machine-readable format) from NOTICE and licenses/ to stdout.
set -eu
cd "$(dirname "$0")/.."
cat <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: facegate
Comment: /opt/facegate/venv holds the Python packages facegate depends on, each under its own
 licence (see the LICENSE files in their *.dist-info folders). The NOTICE of facegate follows.
 .
HEAD
sed -e 's/^$/./' -e 's/^/ /' NOTICE
cat <<'BODY'

Files: *
Copyright: 2026 the facegate authors
License: Apache-2.0
 Licensed under the Apache License, Version 2.0.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0
 can be found in "/usr/share/common-licenses/Apache-2.0".
BODY
for f in licenses/*.txt; do
    case "$f" in *Apache-2.0*)  # Debian ships the text; lintian refuses a copy
        printf '\nFiles: %s\nCopyright: see NOTICE\nLicense: Apache-2.0\n' "$(basename "$f" .txt)"; continue ;;
    esac
    printf '\nFiles: %s\nCopyright: see the licence text\nLicense: %s\n' "$(basename "$f" .txt)" "$(basename "$f" .txt)"
    sed -e 's/^[[:space:]]*$/./' -e 's/^/ /' "$f"
done
