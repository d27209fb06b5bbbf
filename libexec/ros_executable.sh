#!/bin/sh
# `ros2 run` and `ros2 launch` look for a package's executables in <prefix>/lib/robot_compress/.
# A pip install puts the console scripts (whose first line names the right Python) in <prefix>/bin/,
# and setup.py installs this wrapper under each script's name in lib/robot_compress/ to run that
# script. Where there is none (an install that put the wrapper there but no bin/, such as a colcon
# symlink install), it runs the entry point with the python3 on PATH.
name=$(basename -- "$0")
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
script="$here/../../bin/$name"
if [ -x "$script" ]; then
    exec "$script" "$@"
fi
exec python3 -c 'import sys; sys.argv[0] = "@NAME@"; from @MODULE@ import @FUNCTION@; sys.exit(@FUNCTION@())' "$@"
