# SPDX-License-Identifier: LGPL-2.1-or-later
# Sourced by tools/*: makes pip's --user scripts visible and defines
# `setup_builddir DIR [meson options…]`, which configures DIR afresh or
# reconfigures it.
export PATH="$HOME/.local/bin:$PATH"

setup_builddir() {
    local dir=$1
    shift
    if [ -d "$dir/meson-private" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
}
