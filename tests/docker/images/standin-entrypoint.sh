#!/bin/sh
# Stand-in for the Oz agent CLI. It is the agent sidecar image's /entrypoint.sh, so in
# a task container it runs as /agent/entrypoint.sh under the TASK image's /bin/sh
# (busybox). It reports what it was given on stdout, one "standin: " line per fact,
# and takes its behaviour from the environment:
#   STANDIN_BEHAVIOUR  ok (default) | exit:N | sleep:N | oom
#   STANDIN_TOUCH      directories to try writing into (reports ok/fail)
#   STANDIN_CAT        files to print
#   STANDIN_HASH       variables whose exact value to report as a sha256
echo "standin: start"
for arg in "$@"; do
    printf 'standin: arg=%s\n' "$arg"
done
printf 'standin: cwd=%s\n' "$(pwd)"
env | sort | while IFS= read -r line; do
    printf 'standin: env=%s\n' "$line"
done
for dir in $STANDIN_TOUCH; do
    if touch "$dir/.standin-probe" 2>/dev/null; then
        echo "standin: touch $dir=ok"
    else
        echo "standin: touch $dir=fail"
    fi
done
for file in $STANDIN_CAT; do
    printf 'standin: cat %s=%s\n' "$file" "$(cat "$file" 2>&1)"
done
for name in $STANDIN_HASH; do
    eval "value=\${$name}"
    printf 'standin: sha256 %s=%s\n' "$name" "$(printf '%s' "$value" | sha256sum | cut -d' ' -f1)"
done
case "${STANDIN_BEHAVIOUR:-ok}" in
    ok) echo "standin: done"; exit 0 ;;
    exit:*) exit "${STANDIN_BEHAVIOUR#exit:}" ;;
    sleep:*) echo "standin: sleeping"; sleep "${STANDIN_BEHAVIOUR#sleep:}"; exit 0 ;;
    oom)
        echo "standin: hogging memory"
        hog=$(head -c 500000000 /dev/zero | tr '\0' a)
        echo "standin: survived ${#hog}"
        exit 0 ;;
    *) echo "standin: unknown behaviour $STANDIN_BEHAVIOUR"; exit 99 ;;
esac
