#!/bin/sh
# Cut and restore the robot<->edge link in the compose setup by detaching the robot container from
# the edge network and attaching it again (docker network disconnect/connect through the Docker
# socket). ROS traffic (camera, results) runs on another network and is not touched, like a robot
# whose Wi-Fi uplink drops while its on-board bus keeps working.
#
#   link_flap.sh flap      cut for DOWN_S seconds every UP_S seconds, CYCLES times (0 = until stopped)
#   link_flap.sh cut       cut once and leave it cut
#   link_flap.sh restore   attach again
#   link_flap.sh status    print "up" or "down"
#
# Environment: LINK_NETWORK (rc_edgelink), LINK_CONTAINER (rc-robot), DOWN_S (10), UP_S (20),
# CYCLES (0). Stopping a flap (SIGTERM/SIGINT) restores the link first. POSIX sh (docker:cli is Alpine).
set -eu

net="${LINK_NETWORK:-rc_edgelink}"
ctr="${LINK_CONTAINER:-rc-robot}"
down_s="${DOWN_S:-10}"
up_s="${UP_S:-20}"
cycles="${CYCLES:-0}"

log() { echo "$(date -u +%H:%M:%S) link: $*"; }

is_up() {
    docker inspect --format '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}' "$ctr" \
        | tr ' ' '\n' | grep -qx "$net"
}

cut_link() {
    if is_up; then
        docker network disconnect "$net" "$ctr"
        log "DOWN  $ctr detached from $net"
    else
        log "already down"
    fi
}

restore_link() {
    if is_up; then
        log "already up"
    else
        docker network connect "$net" "$ctr"
        log "UP    $ctr attached to $net"
    fi
}

wait_for_container() {
    tries=0
    until docker inspect "$ctr" >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            log "container $ctr not found"
            exit 1
        fi
        sleep 1
    done
}

pause() {
    # sleep in the background so a SIGTERM is handled at once, not after the sleep
    sleep "$1" &
    wait $! || true
}

mode="${1:-flap}"
case "$mode" in
    cut)
        wait_for_container
        cut_link
        ;;
    restore)
        wait_for_container
        restore_link
        ;;
    status)
        wait_for_container
        if is_up; then echo up; else echo down; fi
        ;;
    flap)
        wait_for_container
        trap 'restore_link; exit 0' INT TERM
        log "flapping $ctr on $net: up ${up_s}s, down ${down_s}s, cycles ${cycles} (0 = until stopped)"
        n=0
        while [ "$cycles" -eq 0 ] || [ "$n" -lt "$cycles" ]; do
            pause "$up_s"
            cut_link
            pause "$down_s"
            restore_link
            n=$((n + 1))
        done
        ;;
    *)
        echo "usage: $0 [flap|cut|restore|status]" >&2
        exit 2
        ;;
esac
