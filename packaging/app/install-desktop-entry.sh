#!/usr/bin/env bash
# Put diffrecon in this user's application menu, pointing at the bundle folder this script is in.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
apps=${XDG_DATA_HOME:-$HOME/.local/share}/applications
mkdir -p "$apps"
sed -e "s|^Exec=diffrecon |Exec=\"$here/diffrecon\" |" -e "s|^Icon=diffrecon\$|Icon=$here/diffrecon.png|" \
    "$here/diffrecon.desktop" > "$apps/diffrecon.desktop"
echo "installed $apps/diffrecon.desktop"
