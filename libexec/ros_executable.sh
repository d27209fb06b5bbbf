#!/bin/sh
# `ros2 run` and `ros2 launch` look for a package's executables in <prefix>/lib/robot_compress/.
# A pip install puts the console scripts (whose first line names the right Python) in <prefix>/bin/,
# and this wrapper, installed under each script's name in lib/robot_compress/, runs that script.
# (colcon installs the console scripts themselves into lib/robot_compress/ and skips the wrappers.)
name=$(basename -- "$0")
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
script="$here/../../bin/$name"
if [ ! -x "$script" ]; then
    echo "robot_compress: console script '$script' not found; reinstall robot_compress (pip install)" >&2
    exit 127
fi
exec "$script" "$@"
