#!/bin/sh
# A STAND-IN for Warp's agent, for trying the docker backend offline. It is not the agent.
#
# `ozw dev-sidecar-image` puts this file at /entrypoint.sh of an image; used as the
# agent sidecar, it is /agent/entrypoint.sh in the task container, run by the task
# image's /bin/sh with the argument vector the worker gives the real agent. It talks
# to no server: it prints its arguments, then performs OZ_STANDIN_PROMPT (from the
# task's env_vars, as the direct backend's stand-in `oz` does): steps separated by
# ';', each one of
#   echo <text>       print <text> on stdout
#   stderr <text>     print <text> on stderr
#   sleep <seconds>   sleep
#   exit <code>       exit with <code> now
#   fail              print an error on stderr and exit 1
echo "stand-in agent: $*"
steps=${OZ_STANDIN_PROMPT:-"echo stand-in agent: no OZ_STANDIN_PROMPT, nothing to do"}
IFS=';'
for step in $steps; do
    IFS=' '
    step=${step#"${step%%[! ]*}"}
    word=${step%% *}
    rest=${step#"$word"}
    rest=${rest# }
    case "$word" in
        echo) printf '%s\n' "$rest" ;;
        stderr) printf '%s\n' "$rest" >&2 ;;
        sleep) sleep "$rest" ;;
        exit) exit "$rest" ;;
        fail) echo "stand-in agent: failing as asked" >&2; exit 1 ;;
        "") ;;
        *) echo "stand-in agent: unknown step: $step" >&2; exit 2 ;;
    esac
    IFS=';'
done
exit 0
